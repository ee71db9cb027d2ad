// Matching a token stream against a static automaton, and drafting from the match.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "static_automaton.hpp"

namespace sam {

// A frequency-ranked tree of continuations. Node i continues node parents[i] (or the matched
// context when -1); parents[i] < i. probability = occurrences of the path / of the context.
struct DraftTree {
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> parents;
  std::vector<float> probabilities;
  std::vector<std::int64_t> counts;
};

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

  // Up to `max_tokens` tokens that followed an occurrence of the matched suffix; prefers, at
  // each step while the suffix occurs more than once, the most frequent next token.
  std::vector<Token> draft(std::size_t max_tokens) const;
  // The `max_nodes` most probable continuation paths, best-first, at most `max_depth` deep.
  DraftTree draft_tree(std::size_t max_nodes, std::size_t max_depth) const;

 private:
  // The state to draft from: the match, or its nearest suffix-link ancestor that has a
  // continuation when every occurrence of the match ends a document; root if none does.
  StateId draft_state() const;

  std::shared_ptr<const StaticAutomaton> automaton_;
  StateId state_ = 0;
  std::uint32_t match_length_ = 0;
};

}  // namespace sam
