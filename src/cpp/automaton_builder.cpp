#include "automaton_builder.hpp"

#include <algorithm>
#include <limits>

namespace sam {
namespace {

constexpr std::size_t kMinSlots = 64;
// Linear probing stays short below ~70% load.
constexpr double kMaxLoad = 0.7;

std::size_t round_up_power_of_two(std::size_t value) {
  std::size_t result = kMinSlots;
  while (result < value) result <<= 1;
  return result;
}

}  // namespace

AutomatonBuilder::AutomatonBuilder() {
  grow_table(kMinSlots);
  clear();
}

void AutomatonBuilder::clear() {
  states_.clear();
  edges_.clear();
  std::fill(slot_keys_.begin(), slot_keys_.end(), kEmptyKey);
  used_slots_ = 0;
  num_edges_ = 0;
  text_length_ = 0;
  new_state(0, kNoState, 0);
  last_ = 0;
  last_clone_ = kNoState;
  last_split_source_ = kNoState;
}

void AutomatonBuilder::release() {
  std::vector<State>().swap(states_);
  std::vector<std::uint64_t>().swap(slot_keys_);
  std::vector<StateId>().swap(slot_targets_);
  std::vector<EdgeListNode>().swap(edges_);
  slot_mask_ = 0;
  used_slots_ = 0;
  text_length_ = 0;
  grow_table(kMinSlots);
  clear();
}

void AutomatonBuilder::reserve(std::size_t text_length) {
  // A suffix automaton has at most 2n-1 states and 3n-4 transitions; real texts sit near
  // 1.6n states and 2.5n transitions, so reserve for that and let rare outliers rehash.
  states_.reserve(text_length + text_length * 7 / 10 + 2);
  // About a third of the transitions do not fit inline on real text.
  const std::size_t expected_table_edges = text_length * 4 / 5 + 16;
  edges_.reserve(expected_table_edges);
  grow_table(static_cast<std::size_t>(static_cast<double>(expected_table_edges) / kMaxLoad) + 1);
}

std::size_t AutomatonBuilder::memory_bytes() const {
  return states_.capacity() * sizeof(State) + slot_keys_.capacity() * sizeof(std::uint64_t) +
         slot_targets_.capacity() * sizeof(StateId) +
         edges_.capacity() * sizeof(EdgeListNode);
}

std::size_t AutomatonBuilder::slot_index(std::uint64_t key) const {
  // Fibonacci hashing: the top bits of key * 2^64/phi depend on every bit of the key.
  const std::uint64_t mixed = (key ^ (key >> 32)) * 0x9E3779B97F4A7C15ull;
  return static_cast<std::size_t>(mixed >> slot_shift_);
}

std::size_t AutomatonBuilder::find_slot(std::uint64_t key) const {
  std::size_t index = slot_index(key);
  while (slot_keys_[index] != key && slot_keys_[index] != kEmptyKey) {
    index = (index + 1) & slot_mask_;
  }
  return index;
}

std::size_t AutomatonBuilder::find(StateId state, Token token) const {
  const std::size_t index = find_slot(key_of(state, token));
  return slot_keys_[index] == kEmptyKey ? kNoSlot : index;
}

StateId* AutomatonBuilder::find_target(StateId state, Token token) {
  State& data = states_[state];
  for (int slot = 0; slot < kInlineEdges; ++slot) {
    if (data.inline_target[slot] == kNoState) return nullptr;
    if (data.inline_token[slot] == token) return &data.inline_target[slot];
  }
  if (data.first_edge == kNoEdge) return nullptr;
  const std::size_t index = find_slot(key_of(state, token));
  return slot_keys_[index] == kEmptyKey ? nullptr : &slot_targets_[index];
}

StateId AutomatonBuilder::transition(StateId state, Token token) const {
  const State& data = states_[state];
  for (int slot = 0; slot < kInlineEdges; ++slot) {
    if (data.inline_target[slot] == kNoState) return kNoState;
    if (data.inline_token[slot] == token) return data.inline_target[slot];
  }
  if (data.first_edge == kNoEdge) return kNoState;
  const std::size_t index = find(state, token);
  return index == kNoSlot ? kNoState : slot_targets_[index];
}

void AutomatonBuilder::grow_table(std::size_t min_slots) {
  const std::size_t new_size = round_up_power_of_two(min_slots);
  if (new_size <= slot_keys_.size()) return;
  std::vector<std::uint64_t> old_keys;
  std::vector<StateId> old_targets;
  old_keys.swap(slot_keys_);
  old_targets.swap(slot_targets_);
  slot_keys_.assign(new_size, kEmptyKey);
  slot_targets_.assign(new_size, 0);
  slot_mask_ = new_size - 1;
  slot_shift_ = 64;
  for (std::size_t size = new_size; size > 1; size >>= 1) --slot_shift_;
  for (std::size_t slot = 0; slot < old_keys.size(); ++slot) {
    if (old_keys[slot] == kEmptyKey) continue;
    const std::size_t index = find_slot(old_keys[slot]);
    slot_keys_[index] = old_keys[slot];
    slot_targets_[index] = old_targets[slot];
  }
}

void AutomatonBuilder::add_transition(StateId state, Token token, StateId target) {
  ++num_edges_;
  State& data = states_[state];
  for (int slot = 0; slot < kInlineEdges; ++slot) {
    if (data.inline_target[slot] == kNoState) {
      data.inline_token[slot] = token;
      data.inline_target[slot] = target;
      return;
    }
  }
  if (static_cast<double>(used_slots_ + 1) > kMaxLoad * static_cast<double>(slot_keys_.size())) {
    grow_table(slot_keys_.size() * 2);
  }
  if (edges_.size() >= kNoEdge) {
    throw InputError("text too large: more than 2^32-1 automaton transitions");
  }
  const std::size_t index = find_slot(key_of(state, token));
  slot_keys_[index] = key_of(state, token);
  slot_targets_[index] = target;
  ++used_slots_;
  edges_.push_back(EdgeListNode{token, states_[state].first_edge});
  states_[state].first_edge = static_cast<std::uint32_t>(edges_.size() - 1);
}

StateId AutomatonBuilder::new_state(std::uint32_t length, StateId link, std::uint32_t first_end) {
  if (states_.size() >= kNoState) {
    throw InputError("text too large: more than 2^32-1 automaton states");
  }
  State state{};
  state.length = length;
  state.link = link;
  state.first_end = first_end;
  state.first_edge = kNoEdge;
  for (int slot = 0; slot < kInlineEdges; ++slot) state.inline_target[slot] = kNoState;
  states_.push_back(state);
  return static_cast<StateId>(states_.size() - 1);
}

void AutomatonBuilder::append(Token token) {
  if (text_length_ >= std::numeric_limits<std::uint32_t>::max() - 1) {
    throw InputError("text too large: at most 2^32-2 tokens (separators included)");
  }
  const auto position = static_cast<std::uint32_t>(text_length_);
  const StateId current = new_state(states_[last_].length + 1, kNoState, position);
  last_clone_ = kNoState;
  last_split_source_ = kNoState;
  StateId state = last_;
  // Every suffix of the old text that cannot be followed by `token` gains a transition to the
  // new state; the walk stops at the first one that can, which bounds the total work.
  StateId* existing = nullptr;
  while (state != kNoState && (existing = find_target(state, token)) == nullptr) {
    add_transition(state, token, current);
    state = states_[state].link;
  }
  if (state == kNoState) {
    states_[current].link = 0;
  } else {
    const StateId next = *existing;
    if (states_[state].length + 1 == states_[next].length) {
      states_[current].link = next;
    } else {
      // `next` holds strings of two different end-position sets: split off the shorter ones.
      const StateId clone =
          new_state(states_[state].length + 1, states_[next].link, states_[next].first_end);
      for (int slot = 0; slot < kInlineEdges; ++slot) {
        states_[clone].inline_token[slot] = states_[next].inline_token[slot];
        states_[clone].inline_target[slot] = states_[next].inline_target[slot];
        if (states_[next].inline_target[slot] != kNoState) ++num_edges_;
      }
      for (std::uint32_t edge = states_[next].first_edge; edge != kNoEdge;
           edge = edges_[edge].next) {
        const Token edge_token = edges_[edge].token;
        add_transition(clone, edge_token, slot_targets_[find(next, edge_token)]);
      }
      while (state != kNoState) {
        StateId* target = find_target(state, token);
        if (target == nullptr || *target != next) break;
        *target = clone;
        state = states_[state].link;
      }
      states_[next].link = clone;
      states_[current].link = clone;
      last_clone_ = clone;
      last_split_source_ = next;
    }
  }
  last_ = current;
  ++text_length_;
}

}  // namespace sam
