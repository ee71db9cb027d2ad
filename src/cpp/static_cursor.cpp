#include "static_cursor.hpp"

namespace sam {

StaticCursor::StaticCursor(std::shared_ptr<const StaticAutomaton> automaton)
    : automaton_(std::move(automaton)) {}

void StaticCursor::reset() {
  state_ = 0;
  match_length_ = 0;
}

std::uint32_t StaticCursor::feed_one(Token token) {
  if (token > kMaxToken) throw InputError("token ids must be in [0, 2^31-1]");
  const StaticAutomaton& automaton = *automaton_;
  while (true) {
    const StateId next = automaton.transition(state_, token);
    if (next != kNoState) {
      state_ = next;
      ++match_length_;
      return match_length_;
    }
    if (state_ == 0) {
      match_length_ = 0;
      return 0;
    }
    state_ = automaton.link(state_);
    match_length_ = automaton.length(state_);
  }
}

std::uint32_t StaticCursor::feed(const Token* tokens, std::size_t size) {
  for (std::size_t index = 0; index < size; ++index) feed_one(tokens[index]);
  return match_length_;
}

StateId StaticCursor::draft_state() const {
  if (match_length_ == 0) return 0;
  const StaticAutomaton& automaton = *automaton_;
  StateId state = state_;
  while (state != 0 && automaton.out_degree(state) == 0) state = automaton.link(state);
  return state;
}

std::vector<ShardState> StaticCursor::draft_context() const {
  const StateId state = draft_state();
  if (state == 0) return {};
  return {ShardState{automaton_.get(), state}};
}

std::vector<Token> StaticCursor::draft(std::size_t max_tokens) const {
  if (max_tokens == 0 || match_length_ == 0) return {};
  return draft_chain(draft_context(), max_tokens).tokens;
}

DraftChain StaticCursor::draft_with_counts(std::size_t max_tokens) const {
  if (max_tokens == 0 || match_length_ == 0) return {};
  return draft_chain(draft_context(), max_tokens);
}

DraftTree StaticCursor::draft_tree(std::size_t max_nodes, std::size_t max_depth,
                                   std::size_t scan_budget) const {
  if (max_nodes == 0 || max_depth == 0 || match_length_ == 0) return {};
  return sam::draft_tree(draft_context(), max_nodes, max_depth, scan_budget);
}

std::vector<std::pair<std::uint32_t, StateId>> StaticCursor::matched_orders() const {
  std::vector<std::pair<std::uint32_t, StateId>> orders;
  if (match_length_ == 0) return orders;
  const StaticAutomaton& automaton = *automaton_;
  orders.emplace_back(match_length_, state_);
  for (StateId state = automaton.link(state_); state != 0 && orders.size() < kMaxMatchedOrders;
       state = automaton.link(state)) {
    orders.emplace_back(automaton.length(state), state);
  }
  return orders;
}

ScoredDraft StaticCursor::scored_draft(const ScoredDraftOptions& options) const {
  std::vector<MatchedOrder<StaticAutomaton>> orders;
  for (const auto& [length, state] : matched_orders()) {
    orders.push_back(MatchedOrder<StaticAutomaton>{length, {{automaton_.get(), state}}});
  }
  return sam::scored_draft(orders, options);
}

}  // namespace sam
