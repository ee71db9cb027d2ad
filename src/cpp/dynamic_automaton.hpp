// The dynamic automaton: over the prompt and the text generated so far, grown token by token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "automaton_builder.hpp"

namespace sam {

// Every method may be called from several threads at once: one mutex serializes them, so a
// draft never reads arrays that a concurrent extend is reallocating (the Python binding runs
// long extends without the GIL). Calls are short except extend, which holds the lock for the
// whole input it appends.
class DynamicAutomaton {
 public:
  // Appends tokens, amortized O(1) each.
  void extend(const Token* tokens, std::size_t size);
  void reset();

  // Length of the longest suffix of the text that also ends at an earlier position.
  std::uint32_t match_length() const;
  // Up to `max_tokens` tokens that followed the first earlier occurrence of that suffix.
  std::vector<Token> draft(std::size_t max_tokens) const;

  std::size_t num_tokens() const;
  std::size_t num_states() const;
  std::size_t nbytes() const;
  // Tokens the text buffer holds before it must grow again.
  std::size_t text_capacity() const;

 private:
  mutable std::mutex mutex_;
  AutomatonBuilder builder_;
  std::vector<Token> text_;
};

}  // namespace sam
