#include "suffix_tree_construction.hpp"

#include <algorithm>
#include <limits>
#include <queue>
#include <stdexcept>
#include <utility>

#include "automaton_builder.hpp"
#include "automaton_storage.hpp"
#include "suffix_array.hpp"
#include "text_layout.hpp"

namespace sam {
namespace {

constexpr std::uint32_t kNoEnd = std::numeric_limits<std::uint32_t>::max();

// An LCP interval whose end is not known yet: a node of the suffix tree of the reversed text.
struct OpenNode {
  std::uint32_t depth;       // string depth = length of the state's longest string
  std::uint32_t first_rank;  // suffix-array rank of its leftmost suffix
  StateId state;             // its id (see the visitors for provisional clone ids)
  std::uint32_t min_end;     // smallest end position (in the text) below it
  std::uint32_t second_end;  // second smallest of its children's smallest end positions

  void add_child_end(std::uint32_t end) {
    if (end < min_end) {
      second_end = min_end;
      min_end = end;
    } else if (end < second_end) {
      second_end = end;
    }
  }
};
using NodeStack = std::vector<OpenNode>;

// Visits the suffix tree of the reversed text bottom-up (Kasai et al. 2001; Abouelhoda et al.
// 2004), calling on `visitor`:
//  - open_clone() -> StateId, for each interval that is not a position state, in a fixed order;
//  - visit_leaf(end, open), for each text position, where `open` holds the ancestors opened so
//    far and its top is the leaf's parent (or the leaf itself, when its position state is also a
//    branching node). An ancestor that starts at or before the leaf but is shallower than its
//    neighbours there opens later, once the sweep reaches its depth:
//  - opened_later(node), when such a node opens;
//  - close(node, occurrences, parent) for each node but the root, and close_root(occurrences).
// Position state ids are end + 1, the root is 0.
template <typename Visitor>
void sweep_suffix_tree(const std::vector<SuffixIndex>& suffix_array, const CompactLcp& lcp,
                       Visitor& visitor) {
  const auto size = static_cast<std::uint32_t>(suffix_array.size());
  CompactLcp::SequentialReader lcp_at(lcp);
  NodeStack stack;
  stack.push_back(OpenNode{0, 0, 0, kNoEnd, kNoEnd});
  for (std::uint32_t rank = 1; rank <= size; ++rank) {
    // The boundary between the suffixes of ranks rank-1 and rank; past the end, depth 0 closes
    // every node but the root.
    const std::uint32_t depth = rank < size ? lcp_at.at(rank) : 0;
    const std::uint32_t leaf = rank - 1;
    const std::uint32_t leaf_length = size - static_cast<std::uint32_t>(suffix_array[leaf]);
    const std::uint32_t end = leaf_length - 1;
    if (depth > stack.back().depth) {
      // A node opens at this leaf. If the leaf's suffix is exactly as long as the node's string,
      // it is a prefix of its neighbours: the node is the leaf's own position state.
      const StateId state = leaf_length == depth ? text_layout::state_of_position(end) : visitor.open_clone();
      stack.push_back(OpenNode{depth, leaf, state, kNoEnd, kNoEnd});
      stack.back().add_child_end(end);
      visitor.visit_leaf(end, stack);
      continue;
    }
    stack.back().add_child_end(end);
    visitor.visit_leaf(end, stack);
    // Nodes deeper than the boundary close; if no open node is exactly as deep, one opens there
    // as the parent of the deepest one closed.
    while (stack.back().depth > depth) {
      const OpenNode node = stack.back();
      stack.pop_back();
      if (stack.back().depth < depth) {
        stack.push_back(OpenNode{depth, node.first_rank, visitor.open_clone(), kNoEnd, kNoEnd});
        visitor.opened_later(stack.back());
      }
      visitor.close(node, rank - node.first_rank, stack.back().state);
      stack.back().add_child_end(node.min_end);
    }
  }
  visitor.close_root(size);
}

// Positions in [0, size) with rank queries: which positions are in the set, and how many
// smaller ones are.
class PositionSet {
 public:
  explicit PositionSet(std::size_t size) : words_(size / 64 + 1, 0), ranks_(size / 64 + 1, 0) {}
  void insert(std::uint32_t position) { words_[position >> 6] |= bit(position); }
  bool contains(std::uint32_t position) const { return (words_[position >> 6] & bit(position)) != 0; }
  // Call after the last insert.
  void index_ranks() {
    std::uint32_t sum = 0;
    for (std::size_t word = 0; word < words_.size(); ++word) {
      ranks_[word] = sum;
      sum += static_cast<std::uint32_t>(__builtin_popcountll(words_[word]));
    }
  }
  std::uint32_t rank(std::uint32_t position) const {
    const std::uint64_t below = words_[position >> 6] & (bit(position) - 1);
    return ranks_[position >> 6] + static_cast<std::uint32_t>(__builtin_popcountll(below));
  }

 private:
  static std::uint64_t bit(std::uint32_t position) { return std::uint64_t{1} << (position & 63); }
  std::vector<std::uint64_t> words_;
  std::vector<std::uint32_t> ranks_;
};

class CloneCounter {
 public:
  StateId open_clone() { return static_cast<StateId>(num_clones_++); }
  void visit_leaf(std::uint32_t, const NodeStack&) {}
  void opened_later(const OpenNode&) {}
  void close(const OpenNode&, std::uint32_t, StateId) {}
  void close_root(std::uint32_t) {}
  std::size_t num_clones() const { return num_clones_; }

 private:
  std::size_t num_clones_ = 0;
};

// The first sweep: links, counts, lengths and ends of every state. Clones get provisional ids
// in the order the sweep opens them; renumber_clones() then orders them by creation step.
class StateWriter {
 public:
  StateWriter(FrozenArrays* arrays, std::size_t text_length, std::size_t num_clones)
      : arrays_(*arrays), text_length_(static_cast<StateId>(text_length)) {
    const std::size_t num_states = text_length + 1 + num_clones;
    arrays_.link.resize(num_states);
    arrays_.count.resize(num_states);
    arrays_.clone_length.resize(num_clones);
    arrays_.clone_end.resize(num_clones);
    creation_end_.resize(num_clones);
  }
  StateId open_clone() { return text_layout::first_clone(text_length_) + next_clone_++; }
  void opened_later(const OpenNode&) {}
  void visit_leaf(std::uint32_t end, const NodeStack& open) {
    const StateId state = text_layout::state_of_position(end);
    const StateId parent = open.back().state;
    if (parent == state) return;  // a branching node: written when it closes
    arrays_.link[state] = parent;
    set_count(state, 1);
  }
  void close(const OpenNode& node, std::uint32_t occurrences, StateId parent) {
    arrays_.link[node.state] = parent;
    set_count(node.state, occurrences);
    if (node.state <= text_length_) return;
    const std::size_t clone = text_layout::clone_index(node.state, text_length_);
    arrays_.clone_length[clone] = node.depth;
    arrays_.clone_end[clone] = node.min_end;
    creation_end_[clone] = node.second_end;
  }
  void close_root(std::uint32_t occurrences) {
    arrays_.link[0] = 0;
    set_count(0, occurrences);
  }
  // End position of the step at which the online builder creates each clone (provisional id).
  std::vector<std::uint32_t>& creation_ends() { return creation_end_; }
  std::vector<std::pair<StateId, std::uint32_t>>& large_counts() { return large_counts_; }

 private:
  void set_count(StateId state, std::uint32_t count) {
    if (count >= kCountOverflowMarker) {
      arrays_.count[state] = kCountOverflowMarker;
      large_counts_.emplace_back(state, count);
    } else {
      arrays_.count[state] = static_cast<std::uint16_t>(count);
    }
  }

  FrozenArrays& arrays_;
  StateId text_length_;
  StateId next_clone_ = 0;
  std::vector<std::uint32_t> creation_end_;
  std::vector<std::pair<StateId, std::uint32_t>> large_counts_;
};

// Final clone ids from provisional ones: by creation step, as freeze() numbers them.
class CloneOrder {
 public:
  // `creation_ends`: the creation step of each clone by provisional id; becomes its final index.
  CloneOrder(std::vector<std::uint32_t>&& creation_ends, std::size_t text_length)
      : final_index_(std::move(creation_ends)), steps_(text_length),
        text_length_(static_cast<StateId>(text_length)) {
    for (const std::uint32_t step : final_index_) {
      if (step >= text_length || steps_.contains(step)) {
        throw std::logic_error("suffix-array construction: two clones created at one step");
      }
      steps_.insert(step);
    }
    steps_.index_ranks();
    for (std::uint32_t& index : final_index_) index = steps_.rank(index);
  }
  StateId final_id(StateId state) const {
    if (state <= text_length_) return state;
    return text_layout::first_clone(text_length_) + final_index_[text_layout::clone_index(state, text_length_)];
  }
  // The final clone index created at `step`, or kNoState if none is.
  StateId clone_created_at(std::uint32_t step) const {
    return step < text_length_ && steps_.contains(step) ? steps_.rank(step) : kNoState;
  }

 private:
  std::vector<std::uint32_t> final_index_;
  PositionSet steps_;
  StateId text_length_;
};

// values[final index] = old values[provisional index], for the clone part of an array.
template <typename T>
void permute_clones(std::vector<T>* values, std::size_t first, const CloneOrder& order,
                    StateId first_clone_id) {
  std::vector<T> permuted(values->size() - first);
  for (std::size_t index = first; index < values->size(); ++index) {
    const auto provisional = static_cast<StateId>(first_clone_id + (index - first));
    permuted[order.final_id(provisional) - first_clone_id] = (*values)[index];
  }
  std::copy(permuted.begin(), permuted.end(), values->begin() + static_cast<std::ptrdiff_t>(first));
}

void renumber_clones(FrozenArrays* arrays, StateWriter* writer, const CloneOrder& order,
                     std::size_t text_length) {
  const StateId first_clone = text_layout::first_clone(text_length);
  for (StateId& parent : arrays->link) parent = order.final_id(parent);
  permute_clones(&arrays->link, first_clone, order, first_clone);
  permute_clones(&arrays->count, first_clone, order, first_clone);
  permute_clones(&arrays->clone_length, 0, order, first_clone);
  permute_clones(&arrays->clone_end, 0, order, first_clone);
  auto& large = writer->large_counts();
  for (auto& entry : large) entry.first = order.final_id(entry.first);
  std::sort(large.begin(), large.end());
  for (const auto& entry : large) {
    arrays->count_overflow.push_back(entry.first);
    arrays->count_overflow.push_back(entry.second);
  }
}

// The second sweep: for each clone, the state of its longest string minus the last token (the
// source of its solid edge): the ancestor of that string's end position at its length.
class SolidSourceFinder {
 public:
  SolidSourceFinder(const FrozenArrays& arrays, const CloneOrder& order, std::size_t text_length)
      : arrays_(arrays), order_(order), text_length_(static_cast<StateId>(text_length)),
        sources_(arrays.clone_length.size(), kNoState) {}
  StateId open_clone() { return order_.final_id(text_layout::first_clone(text_length_) + next_clone_++); }
  void visit_leaf(std::uint32_t end, const NodeStack& open) {
    // The clone created at step end + 1 has a longest string ending there; without its last
    // token, that string ends here.
    const StateId clone = order_.clone_created_at(end + 1);
    if (clone == kNoState) return;
    const std::uint32_t depth = arrays_.clone_length[clone] - 1;
    if (depth == 0) {
      sources_[clone] = 0;
      return;
    }
    const auto found = std::lower_bound(open.begin(), open.end(), depth,
                                        [](const OpenNode& node, std::uint32_t value) { return node.depth < value; });
    if (found != open.end() && found->depth == depth) {
      sources_[clone] = found->state;
    } else {
      waiting_.emplace(depth, clone);  // the ancestor at that depth opens later
    }
  }
  void opened_later(const OpenNode& node) {
    // Only the next node to open at a depth can be the ancestor a leaf is waiting for: the
    // sweep stays deeper than that depth from the leaf until the node opens. So no leaf waits
    // for a deeper node then, and the waiting ones to answer are the deepest.
    while (!waiting_.empty() && waiting_.top().first == node.depth) {
      sources_[waiting_.top().second] = node.state;
      waiting_.pop();
    }
  }
  void close(const OpenNode&, std::uint32_t, StateId) {}
  void close_root(std::uint32_t) {
    if (!waiting_.empty()) throw std::logic_error("suffix-array construction: a solid edge has no source");
  }
  std::vector<StateId>& sources() { return sources_; }

 private:
  const FrozenArrays& arrays_;
  const CloneOrder& order_;
  StateId text_length_;
  StateId next_clone_ = 0;
  std::vector<StateId> sources_;
  std::priority_queue<std::pair<std::uint32_t, StateId>> waiting_;  // (depth, clone), deepest first
};

// Lengths and occurrence ends of the frozen arrays' states.
struct StateGeometry {
  const FrozenArrays& arrays;
  std::size_t text_length;
  std::uint32_t length(StateId state) const {
    return state <= text_length ? state : arrays.clone_length[text_layout::clone_index(state, text_length)];
  }
  std::uint32_t end(StateId state) const {
    return state <= text_length ? static_cast<std::uint32_t>(text_layout::position_of_state(state))
                                : arrays.clone_end[text_layout::clone_index(state, text_length)];
  }
};

// Calls emit(source, token, target) for every transition of the automaton except the
// backbone and separators: each state's incoming transitions come from its solid source and
// the source's suffix-link ancestors while their strings extended by the token stay in it.
template <typename Emit>
void for_each_stored_transition(const FrozenArrays& arrays, const std::vector<StateId>& clone_sources,
                                std::size_t text_length, Emit&& emit) {
  const StateGeometry geometry{arrays, text_length};
  const std::vector<Token>& text = arrays.text;
  for (StateId target = 1; target < arrays.link.size(); ++target) {
    const Token token = text[geometry.end(target)];
    if (token == kSeparator) continue;
    const std::uint32_t shortest_source = geometry.length(arrays.link[target]);
    // A position state's solid source is the position state before it (its backbone source).
    StateId source = target <= text_length ? target - 1 : clone_sources[text_layout::clone_index(target, text_length)];
    while (true) {
      const bool backbone = text_layout::has_backbone(source, text_length) && text[source] == token;
      if (!backbone) emit(source, token, target);
      if (source == 0) break;
      source = arrays.link[source];
      if (geometry.length(source) < shortest_source) break;
    }
  }
}

void write_transitions(FrozenArrays* arrays, const std::vector<StateId>& clone_sources,
                       std::size_t text_length) {
  const std::size_t num_states = arrays->link.size();
  std::vector<std::uint32_t>& offset = arrays->edge_offset;
  offset.assign(num_states + 1, 0);
  std::uint64_t num_edges = 0;
  for_each_stored_transition(*arrays, clone_sources, text_length, [&](StateId source, Token, StateId) {
    ++offset[source];
    ++num_edges;
  });
  if (num_edges > std::numeric_limits<std::uint32_t>::max()) {
    throw InputError("corpus too large for one file: more than 2^32-1 stored transitions");
  }
  // Inclusive prefix sums, then each transition fills its state's range from the back: offset[s]
  // ends as the start of state s's range.
  for (std::size_t state = 1; state < num_states; ++state) offset[state] += offset[state - 1];
  offset[num_states] = static_cast<std::uint32_t>(num_edges);
  arrays->edge_token.resize(num_edges);
  arrays->edge_target.resize(num_edges);
  for_each_stored_transition(*arrays, clone_sources, text_length, [&](StateId source, Token token, StateId target) {
    const std::uint32_t slot = --offset[source];
    arrays->edge_token[slot] = token;
    arrays->edge_target[slot] = target;
  });
}

void sort_transitions_by_token(FrozenArrays* arrays) {
  std::vector<std::pair<Token, StateId>> edges;
  for (std::size_t state = 0; state + 1 < arrays->edge_offset.size(); ++state) {
    const std::uint32_t begin = arrays->edge_offset[state];
    const std::uint32_t end = arrays->edge_offset[state + 1];
    if (end - begin < 2) continue;
    edges.clear();
    for (std::uint32_t edge = begin; edge < end; ++edge) {
      edges.emplace_back(arrays->edge_token[edge], arrays->edge_target[edge]);
    }
    std::sort(edges.begin(), edges.end());
    for (std::uint32_t edge = begin; edge < end; ++edge) {
      arrays->edge_token[edge] = edges[edge - begin].first;
      arrays->edge_target[edge] = edges[edge - begin].second;
    }
  }
}

}  // namespace

FrozenArrays build_frozen_arrays(std::vector<Token>&& text) {
  const std::size_t text_length = text.size();
  FrozenArrays arrays;
  std::vector<StateId> clone_sources;
  {
    std::vector<SuffixIndex> suffix_array = reversed_suffix_array(text);
    const CompactLcp lcp(text, suffix_array);
    CloneCounter counter;
    sweep_suffix_tree(suffix_array, lcp, counter);
    StateWriter writer(&arrays, text_length, counter.num_clones());
    sweep_suffix_tree(suffix_array, lcp, writer);
    const CloneOrder order(std::move(writer.creation_ends()), text_length);
    renumber_clones(&arrays, &writer, order, text_length);
    arrays.text = std::move(text);
    SolidSourceFinder finder(arrays, order, text_length);
    sweep_suffix_tree(suffix_array, lcp, finder);
    clone_sources = std::move(finder.sources());
  }
  release_free_heap_memory();  // the suffix array, LCP and sweep scratch, before the transitions
  write_transitions(&arrays, clone_sources, text_length);
  std::vector<StateId>().swap(clone_sources);
  release_free_heap_memory();
  sort_transitions_by_token(&arrays);
  return arrays;
}

FrozenArrays build_frozen_arrays_online(std::vector<Token>&& text) {
  AutomatonBuilder builder;
  builder.reserve(text.size());
  for (const Token token : text) builder.append(token);
  return freeze(builder, std::move(text));
}

}  // namespace sam
