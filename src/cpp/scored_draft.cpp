#include "scored_draft.hpp"

#include <algorithm>
#include <queue>

#include "dynamic_automaton.hpp"
#include "static_automaton.hpp"

namespace sam {
namespace {

// More orders than this add nothing measurable and would only widen every node's scan.
constexpr std::size_t kMaxBlendedOrders = 32;

// One state a node's path reaches, in one automaton, for one order.
template <typename Automaton>
struct Entry {
  const Automaton* automaton;
  StateId state;
  std::uint32_t order;  // 0 = the longest matched suffix
};

struct Child {
  Token token;
  std::uint32_t order;
  std::uint32_t entry;  // index into the node's entries
  StateId target;
  std::uint64_t count;
};

struct Candidate {
  double path_probability;
  double probability;
  Token token;
  std::int32_t parent;
  std::uint32_t depth;
  std::uint32_t first_entry, end_entry;  // its entries in the search's pool
  bool operator<(const Candidate& other) const {
    // Max-heap on path probability; ties go to the smaller token, then the earlier parent.
    if (path_probability != other.path_probability) {
      return path_probability < other.path_probability;
    }
    if (token != other.token) return token > other.token;
    return parent > other.parent;
  }
};

template <typename Automaton>
class ScoredSearch {
 public:
  explicit ScoredSearch(const ScoredDraftOptions& options)
      : options_(options), budget_(options.scan_budget) {}

  ScoredDraft run(const std::vector<MatchedOrder<Automaton>>& orders) {
    select_orders(orders);
    if (pool_.empty() || options_.max_nodes == 0 || options_.max_depth == 0) return std::move(draft_);
    expand(0, static_cast<std::uint32_t>(pool_.size()), -1, 1, 1.0);
    while (!frontier_.empty() && draft_.tokens.size() < options_.max_nodes) {
      const Candidate best = frontier_.top();
      frontier_.pop();
      const auto index = static_cast<std::int32_t>(draft_.tokens.size());
      draft_.tokens.push_back(static_cast<std::int32_t>(best.token));
      draft_.parents.push_back(best.parent);
      draft_.probabilities.push_back(best.probability);
      draft_.path_probabilities.push_back(best.path_probability);
      draft_.expected_tokens += best.path_probability;
      if (best.depth < options_.max_depth) {
        expand(best.first_entry, best.end_entry, index, best.depth + 1, best.path_probability);
      }
    }
    return std::move(draft_);
  }

 private:
  // Takes orders longest first, skipping those nothing continues, until max_orders are taken or
  // one has enough occurrences that shorter ones cannot sharpen its estimate.
  void select_orders(const std::vector<MatchedOrder<Automaton>>& orders) {
    const std::size_t max_orders = std::min(options_.max_orders, kMaxBlendedOrders);
    std::uint32_t taken = 0;
    for (const MatchedOrder<Automaton>& order : orders) {
      if (taken >= max_orders) break;
      std::uint64_t occurrences = 0;
      std::uint64_t degree = 0;
      for (const LocatedState<Automaton>& located : order.states) {
        occurrences += located.automaton->count(located.state);
        degree += located.automaton->out_degree(located.state);
      }
      if (degree == 0) continue;
      if (taken == 0) draft_.match_length = order.length;
      for (const LocatedState<Automaton>& located : order.states) {
        pool_.push_back(Entry<Automaton>{located.automaton, located.state, taken});
      }
      order_lengths_.push_back(order.length);
      ++taken;
      if (occurrences >= options_.enough_occurrences) break;
    }
    draft_.num_orders = taken;
  }

  // The transitions of entries [first, end) into children_, grouped by token, each group by
  // order; false (nothing read) when they would take the search past its scan budget.
  bool collect(std::uint32_t first, std::uint32_t end) {
    std::size_t degree = 0;
    for (std::uint32_t entry = first; entry < end; ++entry) {
      degree += pool_[entry].automaton->out_degree(pool_[entry].state);
    }
    if (degree > budget_) return false;
    budget_ -= degree;
    draft_.transitions_scanned += degree;
    children_.clear();
    for (std::uint32_t entry = first; entry < end; ++entry) {
      const Entry<Automaton> node = pool_[entry];
      node.automaton->for_each_transition(node.state, [&](Token token, StateId target) {
        children_.push_back(Child{token, node.order, entry, target, node.automaton->count(target)});
      });
    }
    if (end - first > 1) {
      std::sort(children_.begin(), children_.end(), [](const Child& a, const Child& b) {
        if (a.token != b.token) return a.token < b.token;
        if (a.order != b.order) return a.order < b.order;
        return a.entry < b.entry;
      });
    }
    return true;
  }

  // Weight of an order's escape count for a child at `depth` (1: continues the context itself).
  double escape_weight(std::uint32_t order, std::uint32_t depth) const {
    if (options_.trusted_length <= 0.0) return 1.0;
    const double length = static_cast<double>(order_lengths_[order]) + static_cast<double>(depth - 1);
    return length <= options_.trusted_length ? 1.0 : options_.trusted_length / length;
  }

  void expand(std::uint32_t first, std::uint32_t end, std::int32_t parent, std::uint32_t depth,
              double parent_path) {
    if (!collect(first, end)) return;  // left a leaf: see kTreeScanBudget
    // Per order: continuing occurrences (n) and distinct continuations (u).
    std::uint32_t num_orders = 0;
    for (std::uint32_t entry = first; entry < end; ++entry) {
      num_orders = std::max(num_orders, pool_[entry].order + 1);
    }
    occurrences_.assign(num_orders, 0);
    distinct_.assign(num_orders, 0);
    counts_.assign(num_orders, 0);
    for (std::size_t index = 0; index < children_.size(); ++index) {
      const Child& child = children_[index];
      occurrences_[child.order] += child.count;
      const bool new_token_for_order = index == 0 || children_[index - 1].token != child.token ||
                                       children_[index - 1].order != child.order;
      if (new_token_for_order) ++distinct_[child.order];
    }
    options_buffer_.clear();
    for (std::size_t group = 0; group < children_.size();) {
      std::size_t group_end = group;
      while (group_end < children_.size() && children_[group_end].token == children_[group].token) {
        counts_[children_[group_end].order] += children_[group_end].count;
        ++group_end;
      }
      double probability = 0.0;
      for (std::uint32_t order = num_orders; order-- > 0;) {
        if (occurrences_[order] == 0) continue;
        const double escape = static_cast<double>(distinct_[order]) * escape_weight(order, depth);
        probability = (static_cast<double>(counts_[order]) + escape * probability) /
                      (static_cast<double>(occurrences_[order]) + escape);
      }
      const double path = parent_path * probability;
      if (path >= options_.min_path_probability) {
        const auto begin = static_cast<std::uint32_t>(pool_.size());
        for (std::size_t index = group; index < group_end; ++index) {
          const Entry<Automaton>& from = pool_[children_[index].entry];
          pool_.push_back(Entry<Automaton>{from.automaton, children_[index].target, from.order});
        }
        options_buffer_.push_back(Candidate{path, probability, children_[group].token, parent, depth,
                                            begin, static_cast<std::uint32_t>(pool_.size())});
      }
      for (std::size_t index = group; index < group_end; ++index) counts_[children_[index].order] = 0;
      group = group_end;
    }
    // Only the best max_nodes children of one node can ever be taken (one, for a chain).
    const std::size_t keep = options_.chain ? 1 : options_.max_nodes;
    if (options_buffer_.size() > keep) {
      std::partial_sort(options_buffer_.begin(), options_buffer_.begin() + static_cast<std::ptrdiff_t>(keep),
                        options_buffer_.end(), [](const Candidate& a, const Candidate& b) { return b < a; });
      options_buffer_.resize(keep);
    }
    for (const Candidate& option : options_buffer_) frontier_.push(option);
  }

  const ScoredDraftOptions& options_;
  std::size_t budget_;
  ScoredDraft draft_;
  std::vector<Entry<Automaton>> pool_;
  std::vector<std::uint32_t> order_lengths_;  // of the selected orders, longest first
  std::priority_queue<Candidate> frontier_;
  std::vector<Child> children_;
  std::vector<Candidate> options_buffer_;
  std::vector<std::uint64_t> occurrences_, distinct_, counts_;
};

}  // namespace

template <typename Automaton>
ScoredDraft scored_draft(const std::vector<MatchedOrder<Automaton>>& orders,
                         const ScoredDraftOptions& options) {
  return ScoredSearch<Automaton>(options).run(orders);
}

template ScoredDraft scored_draft<StaticAutomaton>(const std::vector<MatchedOrder<StaticAutomaton>>&,
                                                   const ScoredDraftOptions&);
template ScoredDraft scored_draft<CountedTextAutomaton>(
    const std::vector<MatchedOrder<CountedTextAutomaton>>&, const ScoredDraftOptions&);

}  // namespace sam
