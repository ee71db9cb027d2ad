// Static automaton construction from a suffix array: the same frozen arrays as building online
// (automaton_builder.hpp) and freezing (frozen_arrays.hpp), in sequential passes and less memory.
//
// The suffix-link tree of the suffix automaton of T is the suffix tree of reverse(T) (Blumer et
// al. 1985), so with SA and LCP of reverse(T) a stack sweep over the LCP intervals visits the
// states: every suffix of reverse(T) is the position state of the prefix of T it reverses, every
// branching interval that is not one is a clone; length = string depth, suffix link = tree parent,
// count = number of suffixes in the interval, occurrence end = the smallest end position below.
//
// Clones are numbered as the online builder creates them: the online builder splits off a clone
// at the first end position where its strings occur after a second distinct token, which is the
// second smallest of its children's smallest end positions; every step creates at most one clone.
//
// Transitions: the longest string x·c of a state w is reached from the state of x on c (its
// solid edge), and from each suffix-link ancestor of that state whose strings extended by c are
// still long enough for w. The state of x is found in a second sweep, at the leaf of the end
// position of x, as the ancestor whose string depth is |x|.
#pragma once

#include <vector>

#include "frozen_arrays.hpp"
#include "token_types.hpp"

namespace sam {

// Builds the frozen arrays over `text` (documents each followed by kSeparator; moved into the
// result). Equal, array for array, to freeze() of an online build over the same text.
FrozenArrays build_frozen_arrays(std::vector<Token>&& text);

// The online route: AutomatonBuilder then freeze(). Kept as the reference for tests.
FrozenArrays build_frozen_arrays_online(std::vector<Token>&& text);

}  // namespace sam
