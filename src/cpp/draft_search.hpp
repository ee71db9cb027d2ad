// Drafting from a matched context: the most frequent continuation chain and the best-first
// frequency tree, over one corpus automaton or several shards of one corpus.
//
// A corpus split into shards on document boundaries has, for every string, exactly the sum of
// the shards' occurrences; so a context is given as the state holding it in each shard where it
// occurs, and every count below is summed over those shards. With one shard this is the plain
// single-automaton draft; with many it answers exactly as one automaton over all documents.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "static_automaton.hpp"

namespace sam {

// Where one string of the corpus is in one shard: the state that holds it.
struct ShardState {
  const StaticAutomaton* automaton;
  StateId state;
};

// A chain of continuations. counts[i] = occurrences of context + tokens[0..i];
// state_counts[i] = occurrences of context + tokens[0..i-1] (of the context alone for i = 0), so
// counts[i] / state_counts[i] is the corpus frequency of tokens[i] after its prefix.
struct DraftChain {
  std::vector<Token> tokens;
  std::vector<std::uint64_t> counts;
  std::vector<std::uint64_t> state_counts;
};

// A frequency-ranked tree of continuations. Node i continues node parents[i] (or the context
// when -1); parents[i] < i. counts[i] = occurrences of context + the path to node i;
// parent_counts[i] = the same for its parent (the context for -1); probabilities[i] is their
// ratio, the corpus frequency of the node's token after its parent.
struct DraftTree {
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> parents;
  std::vector<double> probabilities;
  std::vector<std::int64_t> counts;
  std::vector<std::int64_t> parent_counts;
  // Transitions read by the search: at most the budget it was given.
  std::size_t transitions_scanned = 0;
};

// The most transitions one draft_tree call reads. A state of a large corpus may have tens of
// thousands of continuations (one per vocabulary token); a node whose states would take the
// search past this budget is not expanded (it stays a leaf), which bounds a call to about this
// many count look-ups (a few milliseconds at worst) whatever the corpus.
constexpr std::size_t kTreeScanBudget = std::size_t{1} << 15;

// Up to `max_tokens` tokens continuing the context, taking at each step the continuation that
// occurs most often (the smaller token on a tie); while the path occurs only once, the text
// after that occurrence. Never crosses a document end. Reads every transition of each state it
// passes (O(degree) per step, stopping early once no unread transition can win).
DraftChain draft_chain(const std::vector<ShardState>& context, std::size_t max_tokens);

// The `max_nodes` most frequent continuation paths, best-first, at most `max_depth` deep, reading
// at most `scan_budget` transitions.
DraftTree draft_tree(const std::vector<ShardState>& context, std::size_t max_nodes,
                     std::size_t max_depth, std::size_t scan_budget = kTreeScanBudget);

}  // namespace sam
