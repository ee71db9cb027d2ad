#include "frozen_arrays.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "text_layout.hpp"

namespace sam {

FrozenArrays freeze(AutomatonBuilder& builder, std::vector<Token>&& text) {
  const std::size_t text_length = text.size();
  const std::size_t num_states = builder.num_states();
  const std::size_t num_clones = num_states - 1 - text_length;

  // Renumber: position states by position, then clones in creation order.
  std::vector<StateId> new_id(num_states);
  std::vector<StateId> old_id(num_states);
  new_id[0] = 0;
  old_id[0] = 0;
  StateId next_clone = text_layout::first_clone(text_length);
  for (StateId state = 1; state < num_states; ++state) {
    const StateId id =
        builder.is_clone(state) ? next_clone++ : text_layout::state_of_position(builder.first_end(state));
    new_id[state] = id;
    old_id[id] = state;
  }

  // The per-state edge lists only serve clones during construction; free them before the
  // frozen arrays are allocated, to lower the build's peak memory.
  builder.release_edge_lists();
  FrozenArrays arrays;
  arrays.link.resize(num_states);
  std::vector<std::uint32_t> count(num_states, 0);
  arrays.clone_length.resize(num_clones);
  arrays.clone_end.resize(num_clones);
  arrays.link[0] = 0;
  for (StateId id = 1; id < num_states; ++id) {
    const StateId state = old_id[id];
    arrays.link[id] = new_id[builder.link(state)];
    if (id > text_length) {
      arrays.clone_length[id - text_length - 1] = builder.length(state);
      arrays.clone_end[id - text_length - 1] = builder.first_end(state);
    } else {
      count[id] = 1;  // the occurrence ending at the state's own position
    }
  }
  std::vector<StateId>().swap(old_id);

  // Occurrence counts: each end position counts once for its state and every suffix-link
  // ancestor; summing children into parents in order of decreasing length does exactly that.
  {
    std::vector<std::uint32_t> bucket_start(text_length + 2, 0);
    auto length_of = [&](StateId id) -> std::uint32_t {
      return id <= text_length ? id : arrays.clone_length[id - text_length - 1];
    };
    for (StateId id = 0; id < num_states; ++id) ++bucket_start[length_of(id) + 1];
    for (std::size_t length = 1; length < bucket_start.size(); ++length) {
      bucket_start[length] += bucket_start[length - 1];
    }
    std::vector<StateId> by_length(num_states);
    for (StateId id = 0; id < num_states; ++id) by_length[bucket_start[length_of(id)]++] = id;
    for (std::size_t rank = num_states; rank-- > 1;) {
      const StateId id = by_length[rank];
      if (id != 0) count[arrays.link[id]] += count[id];
    }
  }
  // Nearly all counts are small: store 16 bits, and the rare large ones in a side table.
  arrays.count.resize(num_states);
  for (StateId id = 0; id < num_states; ++id) {
    if (count[id] >= kCountOverflowMarker) {
      arrays.count[id] = kCountOverflowMarker;
      arrays.count_overflow.push_back(id);
      arrays.count_overflow.push_back(count[id]);
    } else {
      arrays.count[id] = static_cast<std::uint16_t>(count[id]);
    }
  }
  std::vector<std::uint32_t>().swap(count);

  // Transitions, minus the implicit backbone and the separator (never matched), bucketed by
  // state in one sequential pass over the builder's table, then sorted by token per state.
  auto stored = [&](StateId old_state, Token token) {
    const StateId id = new_id[old_state];
    const Token backbone = text_layout::backbone_token(text, text_length, id);
    return token != kSeparator && token != backbone;
  };
  arrays.edge_offset.assign(num_states + 1, 0);
  builder.for_each_transition_of_all([&](StateId state, Token token, StateId) {
    if (stored(state, token)) ++arrays.edge_offset[new_id[state] + 1];
  });
  for (std::size_t id = 0; id < num_states; ++id) {
    if (std::uint64_t{arrays.edge_offset[id]} + arrays.edge_offset[id + 1] >
        std::numeric_limits<std::uint32_t>::max()) {
      throw InputError("corpus too large for one file: more than 2^32-1 stored transitions");
    }
    arrays.edge_offset[id + 1] += arrays.edge_offset[id];
  }
  const std::uint32_t num_edges = arrays.edge_offset[num_states];
  std::vector<std::pair<Token, StateId>> edges(num_edges);
  {
    std::vector<std::uint32_t> fill(arrays.edge_offset.begin(), arrays.edge_offset.end() - 1);
    builder.for_each_transition_of_all([&](StateId state, Token token, StateId target) {
      if (stored(state, token)) edges[fill[new_id[state]]++] = {token, new_id[target]};
    });
  }
  builder.release();
  arrays.edge_token.resize(num_edges);
  arrays.edge_target.resize(num_edges);
  for (std::size_t id = 0; id < num_states; ++id) {
    const auto begin = edges.begin() + arrays.edge_offset[id];
    const auto end = edges.begin() + arrays.edge_offset[id + 1];
    if (end - begin > 1) std::sort(begin, end);
  }
  for (std::uint32_t edge = 0; edge < num_edges; ++edge) {
    arrays.edge_token[edge] = edges[edge].first;
    arrays.edge_target[edge] = edges[edge].second;
  }
  arrays.text = std::move(text);
  return arrays;
}

}  // namespace sam
