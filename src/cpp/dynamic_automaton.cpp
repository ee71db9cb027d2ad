#include "dynamic_automaton.hpp"

#include <algorithm>

namespace sam {
namespace {

// Longest suffix-link walk made to keep counts current on one append (see counts_).
constexpr std::size_t kMaxCountWalk = 64;
// Shortest suffixes of a pathological chain are not offered to scored_draft past this many
// orders; it blends far fewer.
constexpr std::size_t kMaxChainOrders = 256;

}  // namespace

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
    append_counted(tokens[index]);
    text_.push_back(tokens[index]);
  }
}

void DynamicAutomaton::append_counted(Token token) {
  builder_.append(token);
  counts_.resize(builder_.num_states(), 0);
  const StateId current = builder_.last();
  counts_[current] = 1;
  if (builder_.last_clone() != kNoState) {
    // A clone ends wherever the state it split from ends, and (below) at the new position.
    counts_[builder_.last_clone()] = counts_[builder_.last_split_source()];
  }
  if (counts_dirty_) return;
  std::size_t steps = 0;
  for (StateId state = builder_.link(current); state != 0; state = builder_.link(state)) {
    if (++steps > kMaxCountWalk) {
      counts_dirty_ = true;
      return;
    }
    ++counts_[state];
  }
}

void DynamicAutomaton::refresh_counts() const {
  if (!counts_dirty_) return;
  const std::size_t states = builder_.num_states();
  counts_.assign(states, 0);
  // Each text position's own state counts once; a state's occurrences are those of its subtree
  // in the suffix-link tree, summed from the longest states down (a counting sort by length).
  std::vector<std::uint32_t> by_length_start(builder_.text_length() + 2, 0);
  for (StateId state = 1; state < states; ++state) {
    if (!builder_.is_clone(state)) counts_[state] = 1;
    ++by_length_start[builder_.length(state) + 1];
  }
  for (std::size_t length = 1; length < by_length_start.size(); ++length) {
    by_length_start[length] += by_length_start[length - 1];
  }
  std::vector<StateId> order(states > 0 ? states - 1 : 0);
  for (StateId state = 1; state < states; ++state) {
    order[by_length_start[builder_.length(state)]++] = state;
  }
  for (std::size_t index = order.size(); index-- > 0;) {
    const StateId state = order[index];
    counts_[builder_.link(state)] += counts_[state];
  }
  counts_dirty_ = false;
}

void DynamicAutomaton::reset() {
  const std::lock_guard<std::mutex> lock(mutex_);
  builder_.clear();
  text_.clear();
  counts_.assign(1, 0);
  counts_dirty_ = false;
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

ScoredDraft DynamicAutomaton::scored_draft(const ScoredDraftOptions& options) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  refresh_counts();
  const CountedTextAutomaton view(builder_, counts_);
  std::vector<MatchedOrder<CountedTextAutomaton>> orders;
  const StateId last = builder_.last();
  if (last == 0) return {};
  // Every suffix that also ended earlier, longest first: the suffix-link chain above the last
  // position's own state (which has no continuation yet).
  for (StateId state = builder_.link(last); state != 0 && orders.size() < kMaxChainOrders;
       state = builder_.link(state)) {
    orders.push_back(MatchedOrder<CountedTextAutomaton>{builder_.length(state), {{&view, state}}});
  }
  return sam::scored_draft(orders, options);
}

std::uint32_t DynamicAutomaton::occurrences(const Token* tokens, std::size_t size) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  refresh_counts();
  StateId state = 0;
  for (std::size_t index = 0; index < size; ++index) {
    state = builder_.transition(state, tokens[index]);
    if (state == kNoState) return 0;
  }
  return size == 0 ? static_cast<std::uint32_t>(text_.size()) : counts_[state];
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
  return builder_.memory_bytes() + text_.capacity() * sizeof(Token) +
         counts_.capacity() * sizeof(std::uint32_t);
}

std::size_t DynamicAutomaton::text_capacity() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return text_.capacity();
}

}  // namespace sam
