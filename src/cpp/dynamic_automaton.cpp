#include "dynamic_automaton.hpp"

#include <algorithm>

namespace sam {

void DynamicAutomaton::extend(const Token* tokens, std::size_t size) {
  for (std::size_t index = 0; index < size; ++index) {
    if (tokens[index] > kMaxToken) throw InputError("token ids must be in [0, 2^31-1]");
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  // Grow by at least doubling: reserving exactly size + n on every call would copy the whole
  // text each time one token is accepted, O(n^2) over a generation.
  const std::size_t needed = text_.size() + size;
  if (needed > text_.capacity()) text_.reserve(std::max(needed, 2 * text_.capacity()));
  for (std::size_t index = 0; index < size; ++index) {
    builder_.append(tokens[index]);
    text_.push_back(tokens[index]);
  }
}

void DynamicAutomaton::reset() {
  const std::lock_guard<std::mutex> lock(mutex_);
  builder_.clear();
  text_.clear();
}

std::uint32_t DynamicAutomaton::match_length() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  // The last position's own state ends only there; its suffix link holds the longest
  // suffix with more end positions, i.e. one that also ended earlier.
  const StateId last = builder_.last();
  return last == 0 ? 0 : builder_.length(builder_.link(last));
}

std::vector<Token> DynamicAutomaton::draft(std::size_t max_tokens) const {
  std::vector<Token> tokens;
  const std::lock_guard<std::mutex> lock(mutex_);
  const StateId last = builder_.last();
  if (last == 0 || max_tokens == 0) return tokens;
  const StateId earlier = builder_.link(last);
  if (earlier == 0) return tokens;
  const std::size_t begin = std::size_t{builder_.first_end(earlier)} + 1;
  const std::size_t end = std::min(text_.size(), begin + max_tokens);
  tokens.assign(text_.begin() + static_cast<std::ptrdiff_t>(begin),
                text_.begin() + static_cast<std::ptrdiff_t>(end));
  return tokens;
}

std::size_t DynamicAutomaton::num_tokens() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return text_.size();
}

std::size_t DynamicAutomaton::num_states() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return builder_.num_states();
}

std::size_t DynamicAutomaton::nbytes() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return builder_.memory_bytes() + text_.capacity() * sizeof(Token);
}

std::size_t DynamicAutomaton::text_capacity() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return text_.capacity();
}

}  // namespace sam
