// Online suffix-automaton construction (Blumer et al.), one token at a time in amortized O(1).
//
// Used directly by the dynamic automaton, and as the first stage of building a static one,
// which is then frozen into flat arrays (static_automaton.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "token_types.hpp"

namespace sam {

class AutomatonBuilder {
 public:
  AutomatonBuilder();

  // Sizes the tables for a text of `text_length` tokens so the build never rehashes.
  void reserve(std::size_t text_length);
  // Appends one token (any uint32, the separator included) at the end of the text.
  void append(Token token);
  // Back to the empty text; keeps the allocated capacity.
  void clear();

  StateId root() const { return 0; }
  StateId last() const { return last_; }
  std::size_t num_states() const { return states_.size(); }
  std::size_t num_edges() const { return num_edges_; }
  std::size_t text_length() const { return text_length_; }

  std::uint32_t length(StateId state) const { return states_[state].length; }
  StateId link(StateId state) const { return states_[state].link; }
  // End position (0-based) of the first occurrence of the state's strings.
  std::uint32_t first_end(StateId state) const { return states_[state].first_end; }
  // A state created for a new text position has length == first_end + 1; a clone is shorter.
  bool is_clone(StateId state) const {
    return state != 0 && states_[state].length != states_[state].first_end + 1;
  }
  StateId transition(StateId state, Token token) const;
  // The clone made by the last append and the state it was split from (whose occurrences it
  // inherits), or kNoState twice when that append made no clone.
  StateId last_clone() const { return last_clone_; }
  StateId last_split_source() const { return last_split_source_; }

  // Calls visit(token, target) for every outgoing transition of `state`, in no set order.
  template <typename Visit>
  void for_each_transition(StateId state, Visit&& visit) const {
    const State& data = states_[state];
    for (int slot = 0; slot < kInlineEdges && data.inline_target[slot] != kNoState; ++slot) {
      visit(data.inline_token[slot], data.inline_target[slot]);
    }
    for (std::uint32_t edge = data.first_edge; edge != kNoEdge; edge = edges_[edge].next) {
      visit(edges_[edge].token, slot_targets_[find(state, edges_[edge].token)]);
    }
  }

  // Calls visit(state, token, target) for every transition, in memory order (sequential
  // access, much faster than per-state enumeration for a whole automaton).
  template <typename Visit>
  void for_each_transition_of_all(Visit&& visit) const {
    for (std::size_t state = 0; state < states_.size(); ++state) {
      const State& data = states_[state];
      for (int slot = 0; slot < kInlineEdges && data.inline_target[slot] != kNoState; ++slot) {
        visit(static_cast<StateId>(state), data.inline_token[slot], data.inline_target[slot]);
      }
    }
    for (std::size_t slot = 0; slot < slot_keys_.size(); ++slot) {
      const std::uint64_t key = slot_keys_[slot];
      if (key != kEmptyKey) {
        visit(static_cast<StateId>(key >> 32), static_cast<Token>(key), slot_targets_[slot]);
      }
    }
  }

  // Heap bytes held by the tables (capacity, not size).
  std::size_t memory_bytes() const;
  // Frees everything; the builder is empty afterwards.
  void release();
  // Frees the per-state transition lists: afterwards transition() and
  // for_each_transition_of_all() still work, but append() and for_each_transition() must not be
  // called again (freezing needs neither).
  void release_edge_lists() { std::vector<EdgeListNode>().swap(edges_); }

 private:
  static constexpr std::uint32_t kNoEdge = 0xFFFFFFFFu;
  static constexpr std::uint64_t kEmptyKey = ~std::uint64_t{0};
  // Most states have one or two transitions; keeping those inside the state puts the lookup
  // on the cache line the suffix walk touches anyway, and only busier states use the table.
  static constexpr int kInlineEdges = 2;

  struct alignas(32) State {
    std::uint32_t length;
    StateId link;
    std::uint32_t first_end;
    std::uint32_t first_edge;  // head of the list of this state's transitions in the table
    Token inline_token[kInlineEdges];
    StateId inline_target[kInlineEdges];  // filled in order; kNoState marks a free place
  };
  // Transitions beyond the inline ones: one open-addressing table keyed by (state, token),
  // keys and targets in separate arrays (12 bytes a slot, not a padded 16), plus per-state
  // lists so that a clone can enumerate the transitions of the state it splits.
  static constexpr std::size_t kNoSlot = ~std::size_t{0};
  struct EdgeListNode {
    Token token;
    std::uint32_t next;
  };

  static std::uint64_t key_of(StateId state, Token token) {
    return (std::uint64_t{state} << 32) | token;
  }
  std::size_t slot_index(std::uint64_t key) const;
  // The slot holding `key`, or the empty slot where it would go.
  std::size_t find_slot(std::uint64_t key) const;
  // The slot holding (state, token), or kNoSlot.
  std::size_t find(StateId state, Token token) const;
  // Where the target of (state, token) is stored, or nullptr. Invalidated by new states.
  StateId* find_target(StateId state, Token token);
  void add_transition(StateId state, Token token, StateId target);
  void grow_table(std::size_t min_slots);
  StateId new_state(std::uint32_t length, StateId link, std::uint32_t first_end);

  std::vector<State> states_;
  std::vector<std::uint64_t> slot_keys_;
  std::vector<StateId> slot_targets_;
  std::vector<EdgeListNode> edges_;
  std::size_t slot_mask_ = 0;
  int slot_shift_ = 64;
  std::size_t used_slots_ = 0;
  std::size_t num_edges_ = 0;
  std::size_t text_length_ = 0;
  StateId last_ = 0;
  StateId last_clone_ = kNoState;
  StateId last_split_source_ = kNoState;
};

}  // namespace sam
