// Drafts scored across every matched suffix length (SAM-Decoding's automata used as a
// variable-order Markov model).
//
// The longest match is often a single occurrence: its continuation is one sample. The
// suffix-link chain of the matched state holds every shorter match (each distinct set of
// occurrences once, with its counts), and shorter matches have more occurrences and so better
// statistics. Each node's estimate blends the continuation counts of every order where its path
// occurs, shortest first, by Witten-Bell interpolation:
//
//   p_j(t) = (c_j(t) + u_j * p_{j+1}(t)) / (n_j + u_j)
//
// where, for order j (the j-th longest matched suffix) followed by the node's path, n_j counts
// its occurrences that continue with some token, c_j(t) those that continue with t, and u_j
// the distinct tokens that continue it; p beyond the shortest order is 0, so a context seen
// once with one continuation gets 1/2, and n occurrences all agreeing get n/(n+1). A long
// matched context predicts its continuation better than its count alone says (a 30-token match
// seen once is rarely a coincidence), so u is discounted for contexts longer than
// `trusted_length` tokens: weighted by trusted_length / L, where L is the order's length plus the
// node's depth above the context. The tree is
// grown best-first by path probability (the product along the path: the chance that the target
// accepts every node to there if it followed the corpus), so it holds the most probable nodes;
// growth stops where a path's probability falls below a floor, so depth ends where confidence ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "draft_search.hpp"
#include "token_types.hpp"

namespace sam {

struct ScoredDraftOptions {
  std::size_t max_nodes = 64;
  std::size_t max_depth = 40;
  // Nodes whose path probability is below this are not drafted.
  double min_path_probability = 0.05;
  // At most this many orders (distinct matched suffix lengths, longest first) are blended...
  std::size_t max_orders = 8;
  // ...and none shorter is added once an order has this many continuing occurrences (its
  // estimate is then sharp, and shorter orders would only cost transitions to read).
  std::uint64_t enough_occurrences = 64;
  // Contexts up to this many tokens long get the plain estimate; longer ones trust their counts
  // more (see above). 0 turns the discount off.
  double trusted_length = 0.0;
  // One child per node: the single most probable path.
  bool chain = false;
  std::size_t scan_budget = kTreeScanBudget;
};

// Node i continues node parents[i] (or the context when -1); parents[i] < i; nodes are in the
// order they were chosen, so path_probabilities never increases along the array.
struct ScoredDraft {
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> parents;
  // Estimated P(node accepted | parent accepted), the blended p_0 above.
  std::vector<double> probabilities;
  // Product of probabilities from the context to the node.
  std::vector<double> path_probabilities;
  // Length of the longest order that was blended, in tokens (0: nothing matched).
  std::uint32_t match_length = 0;
  // Orders blended at the root.
  std::uint32_t num_orders = 0;
  // Sum of path probabilities: the expected number of accepted tokens.
  double expected_tokens = 0.0;
  std::size_t transitions_scanned = 0;
};

// Where one matched suffix occurs in one automaton (a shard, the dynamic text...).
template <typename Automaton>
struct LocatedState {
  const Automaton* automaton;
  StateId state;
};

// One matched suffix of the context: its length and the states holding it, one per automaton
// (shard) where it occurs.
template <typename Automaton>
struct MatchedOrder {
  std::uint32_t length;
  std::vector<LocatedState<Automaton>> states;
};

// The scored draft from orders given longest first. Automaton needs count(state), the
// occurrences of the state's strings; out_degree(state); and for_each_transition(state, visit).
template <typename Automaton>
ScoredDraft scored_draft(const std::vector<MatchedOrder<Automaton>>& orders,
                         const ScoredDraftOptions& options);

}  // namespace sam
