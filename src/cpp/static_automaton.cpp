#include "static_automaton.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "suffix_tree_construction.hpp"

namespace sam {

std::shared_ptr<const StaticAutomaton> StaticAutomaton::build(const BuildInput& input) {
  std::size_t text_length = 0;
  std::int64_t previous_end = 0;
  Token max_token = 0;
  for (std::size_t document = 0; document < input.num_documents; ++document) {
    const std::int64_t end = input.document_ends[document];
    if (end < previous_end || static_cast<std::size_t>(end) > input.num_tokens) {
      throw InputError("document ends must be non-decreasing and within the token array");
    }
    if (end > previous_end) text_length += static_cast<std::size_t>(end - previous_end) + 1;
    previous_end = end;
  }
  if (static_cast<std::size_t>(previous_end) != input.num_tokens) {
    throw InputError("the last document must end at the end of the token array");
  }
  if (text_length == 0) throw InputError("the corpus has no tokens (all documents are empty)");
  // Checked here, from the document ends alone, so that an oversized corpus fails at once
  // rather than after hours of building.
  if (text_length > kMaxBuildTextLength) {
    throw InputError("corpus too large for one automaton: " + std::to_string(text_length) +
                     " tokens and document separators, at most " +
                     std::to_string(kMaxBuildTextLength) + "; split it into shards");
  }

  std::vector<Token> text;
  text.reserve(text_length);
  std::uint64_t num_documents = 0;
  previous_end = 0;
  for (std::size_t document = 0; document < input.num_documents; ++document) {
    const std::int64_t end = input.document_ends[document];
    if (end == previous_end) continue;
    for (std::int64_t position = previous_end; position < end; ++position) {
      const Token token = input.tokens[position];
      if (token > kMaxToken) throw InputError("token ids must be in [0, 2^31-1]");
      max_token = std::max(max_token, token);
      text.push_back(token);
    }
    text.push_back(kSeparator);
    ++num_documents;
    previous_end = end;
  }

  FrozenArrays arrays = input.construction == Construction::kOnline
                            ? build_frozen_arrays_online(std::move(text))
                            : build_frozen_arrays(std::move(text));

  ImageSummary summary;
  summary.num_tokens = input.num_tokens;
  summary.num_documents = num_documents;
  summary.vocab_bound = max_token + 1;
  summary.tokenizer_fingerprint = input.tokenizer_fingerprint;
  summary.metadata = input.metadata;
  auto automaton = std::shared_ptr<StaticAutomaton>(new StaticAutomaton());
  automaton->attach(write_image(std::move(arrays), summary), false);
  return automaton;
}

std::shared_ptr<const StaticAutomaton> StaticAutomaton::load(const std::string& path,
                                                             bool verify) {
  auto automaton = std::shared_ptr<StaticAutomaton>(new StaticAutomaton());
  automaton->memory_mapped_ = true;
  automaton->attach(std::make_shared<MappedFile>(path), verify);
  return automaton;
}

void StaticAutomaton::attach(std::shared_ptr<const Storage> storage, bool verify_payload) {
  const ImageView view = read_image(storage->data(), storage->size(), verify_payload);
  num_tokens_ = view.num_tokens;
  num_documents_ = view.num_documents;
  text_length_ = view.text_length;
  num_states_ = view.num_states;
  num_clones_ = view.num_clones;
  num_edges_ = view.num_edges;
  vocab_bound_ = view.vocab_bound;
  format_version_ = view.format_version;
  fingerprint_ = view.fingerprint;
  metadata_ = view.metadata;
  text_ = view.text;
  link_ = view.link;
  count_ = view.count;
  count_overflow_ = view.count_overflow;
  num_count_overflows_ = view.num_count_overflows;
  clone_length_ = view.clone_length;
  clone_end_ = view.clone_end;
  edge_offset_ = view.edge_offset;
  edge_token_ = view.edge_token;
  edge_target_ = view.edge_target;
  if (edge_offset_[0] != 0 || edge_offset_[num_states_] != num_edges_) {
    throw FormatError("corrupted automaton file: edge offsets do not span the edges");
  }
  storage_ = std::move(storage);
  build_root_table();
}

void StaticAutomaton::build_root_table() {
  // Bounded so that a huge (or corrupted) vocabulary bound cannot make loading allocate much.
  constexpr std::uint32_t kMaxRootTable = 1u << 22;
  root_transitions_.clear();
  if (vocab_bound_ == 0 || vocab_bound_ > kMaxRootTable) return;
  std::vector<StateId> table(vocab_bound_, kNoState);
  const std::uint32_t end = edge_offset_[1];
  if (end > num_edges_) corrupt("edge offsets");
  for (std::uint32_t edge = 0; edge < end; ++edge) {
    const Token token = edge_token_[edge];
    if (token >= vocab_bound_ || edge_target_[edge] >= num_states_) return;  // left to lookups
    table[token] = edge_target_[edge];
  }
  root_transitions_ = std::move(table);
}

void StaticAutomaton::save(const std::string& path) const {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    throw InputError("cannot open " + path + " for writing: " + std::strerror(errno));
  }
  const std::size_t written = std::fwrite(storage_->data(), 1, storage_->size(), file);
  const bool flushed = std::fflush(file) == 0 && ::fsync(::fileno(file)) == 0;
  const bool closed = std::fclose(file) == 0;
  if (written != storage_->size() || !flushed || !closed) {
    throw InputError("cannot write " + path + ": " + std::strerror(errno));
  }
}

void StaticAutomaton::verify() const {
  if (!payload_checksum_matches(storage_->data(), storage_->size())) {
    throw FormatError("corrupted automaton file: payload checksum mismatch");
  }
  for (StateId state = 0; state < num_states_; ++state) {
    if (link_[state] >= num_states_ || (state != 0 && length(link_[state]) >= length(state))) {
      corrupt("suffix links");
    }
    if (state > text_length_ && clone_end_[text_layout::clone_index(state, text_length_)] >= text_length_) {
      corrupt("clone ends");
    }
    out_degree(state);  // checks offsets
  }
  for (std::uint64_t edge = 0; edge < num_edges_; ++edge) {
    if (edge_target_[edge] >= num_states_) corrupt("edge targets");
  }
}

void StaticAutomaton::corrupt(const char* what) const {
  throw FormatError(std::string("corrupted automaton file: invalid ") + what);
}

StateId StaticAutomaton::transition(StateId state, Token token) const {
  if (state == 0 && !root_transitions_.empty()) {
    return token < root_transitions_.size() ? root_transitions_[token] : kNoState;
  }
  check_state(state);
  if (text_layout::has_backbone(state, text_length_) && text_[state] == token) {
    return text_layout::backbone_target(state);
  }
  std::uint32_t low = edge_offset_[state];
  std::uint32_t high = edge_offset_[state + 1];
  if (low > high || high > num_edges_) corrupt("edge offsets");
  while (low < high) {
    const std::uint32_t middle = low + (high - low) / 2;
    if (edge_token_[middle] < token) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  if (low < edge_offset_[state + 1] && edge_token_[low] == token) {
    const StateId target = edge_target_[low];
    if (target >= num_states_) corrupt("edge target");
    return target;
  }
  return kNoState;
}

StateId StaticAutomaton::link(StateId state) const {
  check_state(state);
  const StateId parent = link_[state];
  // A suffix link always leads to a shorter state; checking it also keeps a corrupted file
  // from sending the matching loop round a cycle forever.
  if (parent >= num_states_ || (state != 0 && length(parent) >= length(state))) {
    corrupt("suffix link");
  }
  return parent;
}

std::uint32_t StaticAutomaton::length(StateId state) const {
  check_state(state);
  // A position state's longest string is the text's prefix up to its position.
  return state <= text_length_ ? state : clone_length_[text_layout::clone_index(state, text_length_)];
}

std::uint32_t StaticAutomaton::count(StateId state) const {
  check_state(state);
  const std::uint16_t small = count_[state];
  if (small != kCountOverflowMarker) return small;
  std::uint32_t low = 0;
  std::uint32_t high = num_count_overflows_;
  while (low < high) {
    const std::uint32_t middle = low + (high - low) / 2;
    if (count_overflow_[2 * middle] < state) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  if (low == num_count_overflows_ || count_overflow_[2 * low] != state) corrupt("large counts");
  return count_overflow_[2 * low + 1];
}

std::uint32_t StaticAutomaton::occurrence_end(StateId state) const {
  check_state(state);
  if (state == 0) return 0;
  const std::uint64_t end = text_layout::is_position_state(state, text_length_)
                                ? text_layout::position_of_state(state)
                                : clone_end_[text_layout::clone_index(state, text_length_)];
  if (end >= text_length_) corrupt("occurrence end");
  return static_cast<std::uint32_t>(end);
}

Token StaticAutomaton::text_at(std::uint64_t position) const {
  return position < text_length_ ? text_[position] : kSeparator;
}

std::uint32_t StaticAutomaton::out_degree(StateId state) const {
  check_state(state);
  const std::uint32_t begin = edge_offset_[state];
  const std::uint32_t end = edge_offset_[state + 1];
  if (begin > end || end > num_edges_) corrupt("edge offsets");
  const bool backbone = text_layout::backbone_token(text_, text_length_, state) != kSeparator;
  return end - begin + (backbone ? 1 : 0);
}

}  // namespace sam
