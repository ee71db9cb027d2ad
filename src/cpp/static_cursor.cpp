#include "static_cursor.hpp"

#include <algorithm>
#include <queue>

namespace sam {
namespace {

// Past this many distinct continuations, picking the most frequent one costs more than a
// draft is worth; such states follow the text after one stored occurrence instead.
constexpr std::uint32_t kMaxScannedDegree = 64;

}  // namespace

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
  const StaticAutomaton& automaton = *automaton_;
  StateId state = state_;
  while (state != 0 && automaton.out_degree(state) == 0) state = automaton.link(state);
  return state;
}

std::vector<Token> StaticCursor::draft(std::size_t max_tokens) const {
  std::vector<Token> tokens;
  if (max_tokens == 0 || match_length_ == 0) return tokens;
  const StaticAutomaton& automaton = *automaton_;
  StateId state = draft_state();
  if (state == 0) return tokens;
  tokens.reserve(std::min<std::size_t>(max_tokens, 64));
  while (tokens.size() < max_tokens) {
    const std::uint32_t degree = automaton.out_degree(state);
    if (degree == 0) break;
    if (automaton.count(state) <= 1 || degree > kMaxScannedDegree) {
      // One occurrence (or too many choices): copy the text that follows it up to the end
      // of its document.
      std::uint64_t position = std::uint64_t{automaton.occurrence_end(state)} + 1;
      if (automaton.text_at(position) == kSeparator) {
        // This occurrence ends a document; take the most frequent continuation instead.
      } else {
        while (tokens.size() < max_tokens) {
          const Token token = automaton.text_at(position++);
          if (token == kSeparator) break;
          tokens.push_back(token);
        }
        break;
      }
    }
    Token best_token = 0;
    StateId best_target = kNoState;
    std::uint32_t best_count = 0;
    automaton.for_each_transition(state, [&](Token token, StateId target) {
      const std::uint32_t count = automaton.count(target);
      if (count > best_count || (count == best_count && token < best_token)) {
        best_token = token;
        best_target = target;
        best_count = count;
      }
    });
    if (best_target == kNoState) break;
    tokens.push_back(best_token);
    state = best_target;
  }
  return tokens;
}

DraftTree StaticCursor::draft_tree(std::size_t max_nodes, std::size_t max_depth) const {
  DraftTree tree;
  if (max_nodes == 0 || max_depth == 0 || match_length_ == 0) return tree;
  const StaticAutomaton& automaton = *automaton_;
  const StateId root = draft_state();
  if (root == 0) return tree;
  const double total = static_cast<double>(automaton.count(root));

  struct Candidate {
    std::uint32_t count;
    Token token;
    StateId state;
    std::int32_t parent;
    std::uint32_t depth;
    bool operator<(const Candidate& other) const {
      // Max-heap on count; ties go to the smaller token, then the earlier parent.
      if (count != other.count) return count < other.count;
      if (token != other.token) return token > other.token;
      return parent > other.parent;
    }
  };
  std::priority_queue<Candidate> frontier;
  std::vector<Candidate> children;
  auto push_children = [&](StateId state, std::int32_t parent, std::uint32_t depth) {
    children.clear();
    automaton.for_each_transition(state, [&](Token token, StateId target) {
      children.push_back(Candidate{automaton.count(target), token, target, parent, depth});
    });
    // Only the best max_nodes children of one node can ever be taken.
    if (children.size() > max_nodes) {
      std::partial_sort(children.begin(), children.begin() + max_nodes, children.end(),
                        [](const Candidate& a, const Candidate& b) { return b < a; });
      children.resize(max_nodes);
    }
    for (const Candidate& child : children) frontier.push(child);
  };

  push_children(root, -1, 1);
  while (!frontier.empty() && tree.tokens.size() < max_nodes) {
    const Candidate best = frontier.top();
    frontier.pop();
    const auto index = static_cast<std::int32_t>(tree.tokens.size());
    tree.tokens.push_back(static_cast<std::int32_t>(best.token));
    tree.parents.push_back(best.parent);
    tree.probabilities.push_back(static_cast<float>(best.count / total));
    tree.counts.push_back(best.count);
    if (best.depth < max_depth) push_children(best.state, index, best.depth + 1);
  }
  return tree;
}

}  // namespace sam
