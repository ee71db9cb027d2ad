// Matching a token stream against a static automaton, and drafting from the match.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "draft_search.hpp"
#include "scored_draft.hpp"
#include "static_automaton.hpp"

namespace sam {

// Suffix-link chains longer than this (only in pathological corpora) offer no shorter orders.
constexpr std::size_t kMaxMatchedOrders = 256;

class StaticCursor {
 public:
  explicit StaticCursor(std::shared_ptr<const StaticAutomaton> automaton);

  // Extends the stream by `size` tokens; returns the new match length. Amortized O(1) each.
  std::uint32_t feed(const Token* tokens, std::size_t size);
  std::uint32_t feed_one(Token token);
  void reset();

  // Length of the longest suffix of the stream that occurs inside one corpus document.
  std::uint32_t match_length() const { return match_length_; }
  StateId state() const { return state_; }
  const StaticAutomaton& automaton() const { return *automaton_; }

  // The state to draft from: the match, or its nearest suffix-link ancestor that has a
  // continuation when every occurrence of the match ends a document; root (0) if none does.
  StateId draft_state() const;

  // Up to `max_tokens` tokens that followed an occurrence of the matched suffix; at each step
  // the most frequent next token (see draft_chain).
  std::vector<Token> draft(std::size_t max_tokens) const;
  // The same chain with the corpus counts of each step.
  DraftChain draft_with_counts(std::size_t max_tokens) const;
  // The `max_nodes` most frequent continuation paths, best-first, at most `max_depth` deep.
  DraftTree draft_tree(std::size_t max_nodes, std::size_t max_depth,
                       std::size_t scan_budget = kTreeScanBudget) const;
  // The draft scored across every matched suffix length (scored_draft.hpp).
  ScoredDraft scored_draft(const ScoredDraftOptions& options) const;
  // The matched suffixes, longest first: (length, state) along the suffix-link chain of the
  // match, at most kMaxMatchedOrders of them.
  std::vector<std::pair<std::uint32_t, StateId>> matched_orders() const;

 private:
  // The draft state as a one-shard context; empty if there is nothing to draft from.
  std::vector<ShardState> draft_context() const;

  std::shared_ptr<const StaticAutomaton> automaton_;
  StateId state_ = 0;
  std::uint32_t match_length_ = 0;
};

}  // namespace sam
