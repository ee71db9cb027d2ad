// Freezing: an AutomatonBuilder's states renumbered into the flat arrays of the file format
// (see static_automaton.hpp for the layout).
#pragma once

#include <cstdint>
#include <vector>

#include "automaton_builder.hpp"
#include "token_types.hpp"

namespace sam {

// Occurrence counts are stored in 16 bits; this value means "look it up in the side table".
constexpr std::uint16_t kCountOverflowMarker = 0xFFFF;

// The frozen arrays, before they are laid out in an image.
struct FrozenArrays {
  std::vector<Token> text;
  std::vector<StateId> link;
  std::vector<std::uint16_t> count;
  std::vector<std::uint32_t> count_overflow;  // (state, count) pairs, sorted by state
  std::vector<std::uint32_t> clone_length;
  std::vector<std::uint32_t> clone_end;
  std::vector<std::uint32_t> edge_offset;
  std::vector<Token> edge_token;
  std::vector<StateId> edge_target;
};

// Renumbers the builder's states (position states by position, then clones), computes
// occurrence counts and CSR transitions, and releases the builder. `text` is the text the builder
// was built over (separators included); it moves into the result. Throws InputError if the stored
// transitions exceed 2^32-1.
FrozenArrays freeze(AutomatonBuilder& builder, std::vector<Token>&& text);

}  // namespace sam
