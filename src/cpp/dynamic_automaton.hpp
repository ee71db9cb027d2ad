// The dynamic automaton: over the prompt and the text generated so far, grown token by token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "automaton_builder.hpp"

namespace sam {

class DynamicAutomaton {
 public:
  // Appends tokens, amortized O(1) each.
  void extend(const Token* tokens, std::size_t size);
  void reset();

  // Length of the longest suffix of the text that also ends at an earlier position.
  std::uint32_t match_length() const;
  // Up to `max_tokens` tokens that followed the first earlier occurrence of that suffix.
  std::vector<Token> draft(std::size_t max_tokens) const;

  std::size_t num_tokens() const { return text_.size(); }
  std::size_t num_states() const { return builder_.num_states(); }
  std::size_t nbytes() const { return builder_.memory_bytes() + text_.capacity() * sizeof(Token); }
  const std::vector<Token>& text() const { return text_; }
  // Tokens the text buffer holds before it must grow again.
  std::size_t text_capacity() const { return text_.capacity(); }

 private:
  AutomatonBuilder builder_;
  std::vector<Token> text_;
};

}  // namespace sam
