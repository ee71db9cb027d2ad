#include "draft_search.hpp"

#include <algorithm>
#include <queue>

namespace sam {
namespace {

// One transition out of one shard's state.
struct Child {
  Token token;
  std::uint32_t shard;  // index into the node's states
  StateId target;
  std::uint64_t count;
};

std::uint64_t total_count(const std::vector<ShardState>& states) {
  std::uint64_t total = 0;
  for (const ShardState& state : states) total += state.automaton->count(state.state);
  return total;
}

// Every transition of the node's states, grouped by token (sorted when there are several
// shards, whose transitions must be merged; one shard's tokens are distinct already).
void collect_children(const std::vector<ShardState>& states, std::vector<Child>* children) {
  children->clear();
  for (std::uint32_t shard = 0; shard < states.size(); ++shard) {
    const StaticAutomaton& automaton = *states[shard].automaton;
    automaton.for_each_transition(states[shard].state, [&](Token token, StateId target) {
      children->push_back(Child{token, shard, target, automaton.count(target)});
    });
  }
  if (states.size() > 1) {
    std::sort(children->begin(), children->end(), [](const Child& a, const Child& b) {
      return a.token != b.token ? a.token < b.token : a.shard < b.shard;
    });
  }
}

// Calls visit(token, summed count, first, last) for each run of equal tokens in `children`.
template <typename Visit>
void for_each_token(const std::vector<Child>& children, Visit&& visit) {
  for (std::size_t first = 0; first < children.size();) {
    std::size_t last = first;
    std::uint64_t count = 0;
    while (last < children.size() && children[last].token == children[first].token) {
      count += children[last++].count;
    }
    visit(children[first].token, count, first, last);
    first = last;
  }
}

// The most frequent continuation of one state (the smaller token on a tie). The counts of a
// state's children sum to at most its own count, so the scan stops as soon as the unread
// transitions together cannot reach the best one: on real text that is after a few of them.
bool best_single_child(const ShardState& node, std::uint64_t node_count, Token* token,
                       StateId* target, std::uint64_t* count) {
  const StaticAutomaton& automaton = *node.automaton;
  std::uint64_t seen = 0;
  bool found = false;
  automaton.for_each_transition_while(node.state, [&](Token child, StateId child_target) {
    const std::uint64_t child_count = automaton.count(child_target);
    if (!found || child_count > *count || (child_count == *count && child < *token)) {
      *token = child;
      *target = child_target;
      *count = child_count;
      found = true;
    }
    seen += child_count;
    return seen < node_count && *count <= node_count - seen;  // else: nothing unread can win
  });
  return found;
}

}  // namespace

DraftChain draft_chain(const std::vector<ShardState>& context, std::size_t max_tokens) {
  DraftChain chain;
  if (context.empty() || max_tokens == 0) return chain;
  auto push = [&](Token token, std::uint64_t count, std::uint64_t state_count) {
    chain.tokens.push_back(token);
    chain.counts.push_back(count);
    chain.state_counts.push_back(state_count);
  };
  std::vector<ShardState> states = context;
  std::vector<ShardState> next;
  std::vector<Child> children;
  std::uint64_t total = total_count(states);
  while (chain.tokens.size() < max_tokens) {
    if (total <= 1 && states.size() == 1) {
      // One occurrence: what follows is the text after it, up to the end of its document.
      const StaticAutomaton& automaton = *states[0].automaton;
      std::uint64_t position = std::uint64_t{automaton.occurrence_end(states[0].state)} + 1;
      if (automaton.text_at(position) != kSeparator) {
        while (chain.tokens.size() < max_tokens) {
          const Token token = automaton.text_at(position++);
          if (token == kSeparator) break;
          push(token, 1, 1);
        }
        break;
      }
    }
    Token best_token = 0;
    std::uint64_t best_count = 0;
    if (states.size() == 1) {
      StateId target = kNoState;
      if (!best_single_child(states[0], total, &best_token, &target, &best_count)) break;
      next.assign(1, ShardState{states[0].automaton, target});
    } else {
      collect_children(states, &children);
      if (children.empty()) break;
      std::size_t best_first = 0, best_last = 0;
      for_each_token(children, [&](Token token, std::uint64_t count, std::size_t first,
                                   std::size_t last) {
        if (best_last == 0 || count > best_count || (count == best_count && token < best_token)) {
          best_token = token;
          best_count = count;
          best_first = first;
          best_last = last;
        }
      });
      next.clear();
      for (std::size_t index = best_first; index < best_last; ++index) {
        next.push_back(ShardState{states[children[index].shard].automaton, children[index].target});
      }
    }
    push(best_token, best_count, total);
    total = best_count;
    states.swap(next);
  }
  return chain;
}

DraftTree draft_tree(const std::vector<ShardState>& context, std::size_t max_nodes,
                     std::size_t max_depth, std::size_t scan_budget) {
  DraftTree tree;
  if (context.empty() || max_nodes == 0 || max_depth == 0) return tree;

  struct Candidate {
    std::uint64_t count;
    std::uint64_t parent_count;
    Token token;
    std::int32_t parent;
    std::uint32_t depth;
    std::uint32_t first_state, end_state;  // its states in `pool`
    bool operator<(const Candidate& other) const {
      // Max-heap on count; ties go to the smaller token, then the earlier parent.
      if (count != other.count) return count < other.count;
      if (token != other.token) return token > other.token;
      return parent > other.parent;
    }
  };
  // The states of every candidate, one per shard where its path occurs.
  std::vector<ShardState> pool(context);
  std::priority_queue<Candidate> frontier;
  std::vector<Child> children;
  std::vector<Candidate> options;
  std::vector<ShardState> node_states;
  std::size_t budget = scan_budget;

  auto expand = [&](std::uint32_t first_state, std::uint32_t end_state, std::int32_t parent,
                    std::uint32_t depth, std::uint64_t count) {
    node_states.assign(pool.begin() + first_state, pool.begin() + end_state);
    std::size_t degree = 0;
    for (const ShardState& state : node_states) degree += state.automaton->out_degree(state.state);
    if (degree > budget) return;  // left a leaf: see kTreeScanBudget
    budget -= degree;
    tree.transitions_scanned += degree;
    collect_children(node_states, &children);
    options.clear();
    for_each_token(children, [&](Token token, std::uint64_t sum, std::size_t first,
                                 std::size_t last) {
      const auto begin = static_cast<std::uint32_t>(pool.size());
      for (std::size_t index = first; index < last; ++index) {
        pool.push_back(ShardState{node_states[children[index].shard].automaton, children[index].target});
      }
      options.push_back(Candidate{sum, count, token, parent, depth, begin,
                                  static_cast<std::uint32_t>(pool.size())});
    });
    // Only the best max_nodes children of one node can ever be taken.
    if (options.size() > max_nodes) {
      std::partial_sort(options.begin(), options.begin() + static_cast<std::ptrdiff_t>(max_nodes),
                        options.end(), [](const Candidate& a, const Candidate& b) { return b < a; });
      options.resize(max_nodes);
    }
    for (const Candidate& option : options) frontier.push(option);
  };

  expand(0, static_cast<std::uint32_t>(context.size()), -1, 1, total_count(context));
  while (!frontier.empty() && tree.tokens.size() < max_nodes) {
    const Candidate best = frontier.top();
    frontier.pop();
    const auto index = static_cast<std::int32_t>(tree.tokens.size());
    tree.tokens.push_back(static_cast<std::int32_t>(best.token));
    tree.parents.push_back(best.parent);
    tree.counts.push_back(static_cast<std::int64_t>(best.count));
    tree.parent_counts.push_back(static_cast<std::int64_t>(best.parent_count));
    tree.probabilities.push_back(best.parent_count == 0 ? 0.0
                                                        : static_cast<double>(best.count) /
                                                              static_cast<double>(best.parent_count));
    if (best.depth < max_depth) expand(best.first_state, best.end_state, index, best.depth + 1, best.count);
  }
  return tree;
}

}  // namespace sam
