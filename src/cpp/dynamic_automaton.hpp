// The dynamic automaton: over the prompt and the text generated so far, grown token by token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "automaton_builder.hpp"
#include "scored_draft.hpp"

namespace sam {

// A growing text's automaton as scored_draft reads it: the builder's transitions and the
// occurrence count of every state, kept beside them.
class CountedTextAutomaton {
 public:
  CountedTextAutomaton(const AutomatonBuilder& builder, const std::vector<std::uint32_t>& counts)
      : builder_(&builder), counts_(&counts) {}
  std::uint32_t count(StateId state) const { return (*counts_)[state]; }
  std::uint32_t out_degree(StateId state) const {
    std::uint32_t degree = 0;
    builder_->for_each_transition(state, [&](Token, StateId) { ++degree; });
    return degree;
  }
  template <typename Visit>
  void for_each_transition(StateId state, Visit&& visit) const {
    builder_->for_each_transition(state, visit);
  }

 private:
  const AutomatonBuilder* builder_;
  const std::vector<std::uint32_t>* counts_;
};

// Every method may be called from several threads at once: one mutex serializes them, so a
// draft never reads arrays that a concurrent extend is reallocating (the Python binding runs
// long extends without the GIL). Calls are short except extend, which holds the lock for the
// whole input it appends.
class DynamicAutomaton {
 public:
  // Appends tokens, amortized O(1) each (see counts_).
  void extend(const Token* tokens, std::size_t size);
  void reset();

  // Length of the longest suffix of the text that also ends at an earlier position.
  std::uint32_t match_length() const;
  // Up to `max_tokens` tokens that followed the first earlier occurrence of that suffix.
  std::vector<Token> draft(std::size_t max_tokens) const;
  // The draft scored across every suffix of the text that occurred earlier (scored_draft.hpp).
  ScoredDraft scored_draft(const ScoredDraftOptions& options) const;
  // Occurrences (end positions) in the text of the string `tokens`; 0 if it does not occur.
  std::uint32_t occurrences(const Token* tokens, std::size_t size) const;

  std::size_t num_tokens() const;
  std::size_t num_states() const;
  std::size_t nbytes() const;
  // Tokens the text buffer holds before it must grow again.
  std::size_t text_capacity() const;

 private:
  void append_counted(Token token);
  // Recomputes every count from the suffix-link tree when counts_dirty_; O(states).
  void refresh_counts() const;

  mutable std::mutex mutex_;
  AutomatonBuilder builder_;
  std::vector<Token> text_;
  // Occurrences of each state's strings. A new position adds one to every state on its
  // suffix-link chain; that chain is short in natural text but as long as the text in a run of
  // one repeated token, so past kMaxCountWalk steps the counts are marked dirty instead and
  // recomputed in one O(states) pass when next read.
  mutable std::vector<std::uint32_t> counts_;
  mutable bool counts_dirty_ = false;
};

}  // namespace sam
