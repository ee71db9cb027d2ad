// The static (corpus) suffix automaton: built once, frozen into flat arrays (frozen_arrays.hpp),
// laid out as a file image whose bytes are exactly the in-memory layout (file_format.hpp), saved,
// and memory-mapped read-only on load (automaton_storage.hpp). This file holds the queries.
//
// Layout, after building over the text  d1 SEP d2 SEP ... dk SEP  of M tokens:
//  - state s in 1..M is the state created for text position s-1, so its length is s and its
//    first occurrence ends at s-1; neither needs storing, nor does its transition on text[s]
//    to state s+1 (the "backbone"), which is never redirected by later clones;
//  - states M+1..S-1 are clones, with their length and an occurrence end stored explicitly;
//  - every other transition lives in CSR arrays sorted by token per state;
//  - count[s] is the number of occurrences (end positions) of the state's strings, in 16 bits
//    with a sorted side table for the few states that occur 65535 times or more.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "automaton_storage.hpp"
#include "file_format.hpp"
#include "text_layout.hpp"
#include "token_types.hpp"

namespace sam {

// Longest text one build accepts: a suffix automaton over n tokens has at most 2n-1 states and
// 3n-4 transitions, so below this every id and edge offset fits 32 bits and a build can never
// fail for size after it started. Larger corpora are split into shards.
constexpr std::uint64_t kMaxBuildTextLength = (0xFFFFFFFFull + 4) / 3;
// How a static build constructs its arrays; both give the same arrays, byte for byte.
enum class Construction {
  kSuffixArray,  // suffix_tree_construction.hpp: faster, about a third of the memory
  kOnline,       // automaton_builder.hpp then freeze(): the reference
};
struct BuildInput {
  const Token* tokens = nullptr;           // all documents back to back, separators excluded
  std::size_t num_tokens = 0;
  const std::int64_t* document_ends = nullptr;  // exclusive end offset of each document
  std::size_t num_documents = 0;
  std::string tokenizer_fingerprint;
  std::string metadata;  // opaque to the core (the Python layer stores JSON)
  Construction construction = Construction::kSuffixArray;
};

class StaticAutomaton {
 public:
  // Builds from documents; empty documents are skipped. Throws InputError on bad input.
  static std::shared_ptr<const StaticAutomaton> build(const BuildInput& input);
  // Maps a file read-only; checks its header and section table (cheap), and, if `verify`, the
  // checksum of every byte (reads the whole file). Throws FormatError naming the problem.
  static std::shared_ptr<const StaticAutomaton> load(const std::string& path, bool verify);

  // Writes the image to `path` (the caller makes that atomic with a rename).
  void save(const std::string& path) const;
  // Recomputes the payload checksum and checks the arrays' invariants; throws FormatError.
  void verify() const;

  std::uint64_t num_tokens() const { return num_tokens_; }
  std::uint64_t num_documents() const { return num_documents_; }
  std::uint64_t text_length() const { return text_length_; }
  std::uint64_t num_states() const { return num_states_; }
  std::uint64_t num_edges() const { return num_edges_; }
  std::uint32_t vocab_bound() const { return vocab_bound_; }
  // Of the file it was loaded from, or the current one for a new build.
  std::uint32_t format_version() const { return format_version_; }
  std::size_t nbytes() const { return storage_->size(); }
  bool is_memory_mapped() const { return memory_mapped_; }
  const std::string& tokenizer_fingerprint() const { return fingerprint_; }
  const std::string& metadata() const { return metadata_; }

  // Queries used by cursors. Every index read from the (possibly corrupted) file is
  // bounds-checked, so a bad file raises FormatError instead of reading out of bounds.
  StateId transition(StateId state, Token token) const;
  StateId link(StateId state) const;
  std::uint32_t length(StateId state) const;
  std::uint32_t count(StateId state) const;
  // End position of one occurrence of the state's strings.
  std::uint32_t occurrence_end(StateId state) const;
  // The corpus text token at `position` (kSeparator between documents).
  Token text_at(std::uint64_t position) const;

  // Calls visit(token, target) for each transition of `state` except separators: first the
  // one along the text (if any), then the others by increasing token.
  template <typename Visit>
  void for_each_transition(StateId state, Visit&& visit) const {
    for_each_transition_while(state, [&](Token token, StateId target) {
      visit(token, target);
      return true;
    });
  }
  // The same, stopping as soon as visit(token, target) returns false.
  template <typename Visit>
  void for_each_transition_while(StateId state, Visit&& visit) const {
    check_state(state);
    const Token next = text_layout::backbone_token(text_, text_length_, state);
    if (next != kSeparator && !visit(next, text_layout::backbone_target(state))) return;
    const std::uint32_t begin = edge_offset_[state];
    const std::uint32_t end = edge_offset_[state + 1];
    if (begin > end || end > num_edges_) corrupt("edge offsets");
    for (std::uint32_t edge = begin; edge < end; ++edge) {
      const StateId target = edge_target_[edge];
      if (target >= num_states_) corrupt("edge target");
      if (!visit(edge_token_[edge], target)) return;
    }
  }
  std::uint32_t out_degree(StateId state) const;

 private:
  StaticAutomaton() = default;
  void attach(std::shared_ptr<const Storage> storage, bool verify_payload);
  void build_root_table();
  void check_state(StateId state) const {
    if (state >= num_states_) corrupt("state index");
  }
  [[noreturn]] void corrupt(const char* what) const;

  std::shared_ptr<const Storage> storage_;
  bool memory_mapped_ = false;
  std::uint64_t num_tokens_ = 0, num_documents_ = 0, text_length_ = 0;
  std::uint64_t num_states_ = 0, num_clones_ = 0, num_edges_ = 0;
  std::uint32_t vocab_bound_ = 0;
  std::uint32_t format_version_ = 0;
  std::string fingerprint_, metadata_;
  TokenArrayView text_;
  const StateId* link_ = nullptr;
  const std::uint16_t* count_ = nullptr;
  const std::uint32_t* count_overflow_ = nullptr;
  std::uint32_t num_count_overflows_ = 0;
  const std::uint32_t* clone_length_ = nullptr;
  const std::uint32_t* clone_end_ = nullptr;
  const std::uint32_t* edge_offset_ = nullptr;
  TokenArrayView edge_token_;
  const StateId* edge_target_ = nullptr;
  // The root's transitions as a direct table indexed by token: every mismatch falls back to
  // the root, where a binary search over the whole vocabulary would cost a dozen cache misses.
  std::vector<StateId> root_transitions_;
};

}  // namespace sam
