// How a frozen automaton numbers its states along the text, named once.
//
// State 0 is the root (the empty string). State s, for 1 <= s <= text_length, is the position
// state of text position s - 1: its longest string is the text's prefix ending there (length s).
// Clones follow, from text_length + 1 on, in creation order. Along the text, state s continues
// with the token at position s to state s + 1: that backbone transition is never stored, only
// implied by the text (a separator there continues nowhere).
#pragma once

#include <cstdint>

#include "token_types.hpp"

namespace sam::text_layout {

// The position state whose longest string ends at text position `position`.
constexpr StateId state_of_position(std::uint64_t position) { return static_cast<StateId>(position + 1); }

// The text position where position state `state` (1 <= state <= text_length) ends.
constexpr std::uint64_t position_of_state(StateId state) { return std::uint64_t{state} - 1; }

// Whether `state` is a position state rather than the root or a clone.
constexpr bool is_position_state(StateId state, std::uint64_t text_length) {
  return state >= 1 && state <= text_length;
}

// The first clone's id, and a clone's index among the clones (0-based).
constexpr StateId first_clone(std::uint64_t text_length) { return static_cast<StateId>(text_length + 1); }
constexpr std::uint64_t clone_index(StateId clone, std::uint64_t text_length) {
  return std::uint64_t{clone} - text_length - 1;
}

// Whether `state` has a backbone transition (a text position follows it), and where it leads.
constexpr bool has_backbone(StateId state, std::uint64_t text_length) { return state >= 1 && state < text_length; }
constexpr StateId backbone_target(StateId state) { return state + 1; }

// The token on `state`'s backbone transition: the text's token at position `state`, or
// kSeparator where there is none. `Text` is anything indexable by position.
template <typename Text>
Token backbone_token(const Text& text, std::uint64_t text_length, StateId state) {
  return has_backbone(state, text_length) ? static_cast<Token>(text[state]) : kSeparator;
}

}  // namespace sam::text_layout
