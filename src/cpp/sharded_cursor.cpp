#include "sharded_cursor.hpp"

#include <algorithm>
#include <functional>

namespace sam {

ShardedCursor::ShardedCursor(const std::vector<std::shared_ptr<const StaticAutomaton>>& shards) {
  if (shards.empty()) throw InputError("a sharded corpus needs at least one shard");
  cursors_.reserve(shards.size());
  for (const auto& shard : shards) {
    if (!shard) throw InputError("a shard is missing");
    cursors_.emplace_back(shard);
  }
}

std::uint32_t ShardedCursor::feed_one(Token token) {
  if (token > kMaxToken) throw InputError("token ids must be in [0, 2^31-1]");
  std::uint32_t longest = 0;
  for (StaticCursor& cursor : cursors_) longest = std::max(longest, cursor.feed_one(token));
  return longest;
}

std::uint32_t ShardedCursor::feed(const Token* tokens, std::size_t size) {
  for (std::size_t index = 0; index < size; ++index) {
    if (tokens[index] > kMaxToken) throw InputError("token ids must be in [0, 2^31-1]");
  }
  for (StaticCursor& cursor : cursors_) cursor.feed(tokens, size);
  return match_length();
}

void ShardedCursor::reset() {
  for (StaticCursor& cursor : cursors_) cursor.reset();
}

std::uint32_t ShardedCursor::match_length() const {
  std::uint32_t longest = 0;
  for (const StaticCursor& cursor : cursors_) longest = std::max(longest, cursor.match_length());
  return longest;
}

std::vector<ShardState> ShardedCursor::draft_context() const {
  // Each shard's longest matched suffix with a continuation there; the longest of them is the
  // longest with a continuation in the whole corpus.
  std::uint32_t context_length = 0;
  for (const StaticCursor& cursor : cursors_) {
    const StateId state = cursor.draft_state();
    if (state == 0) continue;
    const std::uint32_t length =
        state == cursor.state() ? cursor.match_length() : cursor.automaton().length(state);
    context_length = std::max(context_length, length);
  }
  std::vector<ShardState> context;
  if (context_length == 0) return context;
  for (const StaticCursor& cursor : cursors_) {
    if (cursor.match_length() < context_length) continue;  // the context does not occur there
    const StaticAutomaton& automaton = cursor.automaton();
    // The state holding the suffix of that length: the ancestor whose lengths span it.
    StateId state = cursor.state();
    while (state != 0 && automaton.length(automaton.link(state)) >= context_length) {
      state = automaton.link(state);
    }
    context.push_back(ShardState{&automaton, state});
  }
  return context;
}

std::vector<Token> ShardedCursor::draft(std::size_t max_tokens) const {
  if (max_tokens == 0) return {};
  return draft_chain(draft_context(), max_tokens).tokens;
}

DraftChain ShardedCursor::draft_with_counts(std::size_t max_tokens) const {
  if (max_tokens == 0) return {};
  return draft_chain(draft_context(), max_tokens);
}

DraftTree ShardedCursor::draft_tree(std::size_t max_nodes, std::size_t max_depth,
                                    std::size_t scan_budget) const {
  if (max_nodes == 0 || max_depth == 0) return {};
  return sam::draft_tree(draft_context(), max_nodes, max_depth, scan_budget);
}

ScoredDraft ShardedCursor::scored_draft(const ScoredDraftOptions& options) const {
  // Shard k holds the suffix of length L in the state of its chain whose lengths span L. The
  // orders of the whole corpus are the union of the shards' chain lengths, since a suffix's
  // total count changes exactly where some shard's does.
  std::vector<std::vector<std::pair<std::uint32_t, StateId>>> chains;
  std::vector<std::uint32_t> lengths;
  chains.reserve(cursors_.size());
  for (const StaticCursor& cursor : cursors_) {
    chains.push_back(cursor.matched_orders());
    for (const auto& order : chains.back()) lengths.push_back(order.first);
  }
  std::sort(lengths.begin(), lengths.end(), std::greater<>());
  lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  if (lengths.size() > kMaxMatchedOrders) lengths.resize(kMaxMatchedOrders);
  std::vector<std::size_t> position(chains.size(), 0);
  std::vector<MatchedOrder<StaticAutomaton>> orders;
  orders.reserve(lengths.size());
  for (const std::uint32_t length : lengths) {
    MatchedOrder<StaticAutomaton> order{length, {}};
    for (std::size_t shard = 0; shard < chains.size(); ++shard) {
      const auto& chain = chains[shard];
      if (chain.empty() || chain.front().first < length) continue;  // too short a match there
      // Chain entries come longest first; the one holding `length` is the last one >= length.
      std::size_t& at = position[shard];
      while (at + 1 < chain.size() && chain[at + 1].first >= length) ++at;
      order.states.push_back({&cursors_[shard].automaton(), chain[at].second});
    }
    orders.push_back(std::move(order));
  }
  return sam::scored_draft(orders, options);
}

}  // namespace sam
