// Matching and drafting over a corpus split into shards (one automaton file each, split on
// document boundaries), answering exactly as one automaton over all the documents would.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "draft_search.hpp"
#include "static_cursor.hpp"

namespace sam {

class ShardedCursor {
 public:
  // At least one shard; throws InputError otherwise.
  explicit ShardedCursor(const std::vector<std::shared_ptr<const StaticAutomaton>>& shards);

  // Feeds every shard's cursor; returns the new match length. O(shards) per token.
  std::uint32_t feed(const Token* tokens, std::size_t size);
  std::uint32_t feed_one(Token token);
  void reset();

  // Longest suffix of the stream that occurs inside one document of any shard.
  std::uint32_t match_length() const;
  std::size_t num_shards() const { return cursors_.size(); }

  // As StaticCursor's, with every count summed over the shards.
  std::vector<Token> draft(std::size_t max_tokens) const;
  DraftChain draft_with_counts(std::size_t max_tokens) const;
  DraftTree draft_tree(std::size_t max_nodes, std::size_t max_depth,
                       std::size_t scan_budget = kTreeScanBudget) const;
  // As StaticCursor's: every matched suffix length of any shard, blended over all the shards
  // where it occurs.
  ScoredDraft scored_draft(const ScoredDraftOptions& options) const;

 private:
  // The longest suffix of the match that some shard continues, located in every shard where
  // it occurs (whether or not that shard continues it: its occurrences count all the same).
  std::vector<ShardState> draft_context() const;

  std::vector<StaticCursor> cursors_;
};

}  // namespace sam
