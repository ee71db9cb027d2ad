// One drafting step for a whole serving batch (an engine's persistent batch of rows), in one call.
//
// The engine hands over its token table (one row per running request, rows x stride, the text
// of row r in its first lengths[r] entries) and how many tokens each row gained this step. The
// drafter keeps every request's state itself (the automaton of its own text, a cursor on the
// corpus, a cursor on the response-cache segments it began with), works out which state each row
// continues, feeds the new tokens, and writes every row's draft into buffers it owns and reuses.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "dynamic_automaton.hpp"
#include "scored_draft.hpp"
#include "sharded_cursor.hpp"
#include "static_automaton.hpp"
#include "token_types.hpp"

namespace sam {

struct BatchDrafterOptions {
  // Deepest draft, in tokens (K): every output row has this many slots.
  std::size_t max_draft = 8;
  // Drafts stop where a node's path probability falls below this.
  double min_probability = 0.1;
  double trusted_length = 2.0;
  std::size_t max_orders = 1;
  std::uint64_t enough_occurrences = 64;
  // No draft runs past this text length, in tokens.
  std::size_t max_model_len = std::size_t{1} << 31;
  // Steps a request may be missing from the batch before it is taken as finished.
  std::uint32_t park_steps = 4;
};

// Where a row's draft came from.
enum class DraftSource : std::uint8_t { kNone = 0, kText = 1, kCorpus = 2, kResponses = 3 };

// A finished request's response: the tokens it read after its prompt.
struct FinishedResponse {
  std::vector<Token> tokens;
  // True when the request was finished because it was missing from the batch for park_steps
  // steps (it may have been aborted), false when release_all finished it.
  bool parked_out = false;
};

// One step's input. Exactly one of tokens32 / tokens64 is set.
struct BatchStepInput {
  const std::int32_t* tokens32 = nullptr;
  const std::int64_t* tokens64 = nullptr;
  std::size_t rows = 0;
  // Entries between the starts of two rows.
  std::size_t stride = 0;
  // Text length of each row, in tokens (<= stride).
  const std::int64_t* lengths = nullptr;
  // Tokens each row gained this step (<= its length); 0: the row did not decode (no draft).
  const std::int64_t* sampled = nullptr;
  // False: read the rows only (a step the caller will not draft, or will draft later with
  // draft_rows()); the draft outputs are left empty.
  bool draft = true;
};

using Segments = std::vector<std::shared_ptr<const StaticAutomaton>>;

class BatchDrafter {
 public:
  // `corpus`: the corpus's shards (empty: no corpus). Throws InputError on bad options.
  BatchDrafter(Segments corpus, const BatchDrafterOptions& options);
  ~BatchDrafter();
  BatchDrafter(const BatchDrafter&) = delete;
  BatchDrafter& operator=(const BatchDrafter&) = delete;

  // Runs one step; the output arrays below then hold its rows. Throws InputError (and changes
  // nothing) on lengths/sampled out of range or a token id outside [0, 2^31-1] among those read.
  void step(const BatchStepInput& input);
  // Drafts every decoding row of the last step that was read with draft = false (rows that
  // already drafted are drafted again, to the same result).
  void draft_rows();

  // How far off each source's own estimates are (observed over predicted acceptance, > 0; 1 for
  // none): each node's estimate is multiplied by its source's correction (capped at 1) before the
  // sources of a row are compared by expected accepted tokens. Throws InputError when one is not a
  // positive finite number.
  void set_source_corrections(double text, double corpus, double responses);
  // The response-cache segments that requests beginning from now on draft from.
  void set_response_segments(Segments segments);
  // Responses of the requests finished since the last call, oldest first.
  std::vector<FinishedResponse> take_finished();
  // Finishes every request (their responses are queued with parked_out = false).
  void release_all();

  const BatchDrafterOptions& options() const { return options_; }
  // Rows of the last step and the rows the buffers hold (they grow, never shrink).
  std::size_t rows() const { return rows_; }
  std::size_t capacity() const { return capacity_; }
  // Bumped whenever the buffers move (a capacity change): views taken before are stale.
  std::uint64_t buffer_generation() const { return buffer_generation_; }
  std::size_t num_live() const;
  std::size_t num_parked() const;
  std::uint64_t requests_begun() const;

  // Output buffers, `capacity()` rows each; row r of the last step at index r (x K for 2-D ones).
  std::int32_t* tokens() { return tokens_.data(); }
  double* probabilities() { return probabilities_.data(); }
  double* path_probabilities() { return path_probabilities_.data(); }
  std::int32_t* draft_lengths() { return draft_lengths_.data(); }
  std::uint8_t* sources() { return sources_.data(); }
  std::int32_t* match_lengths() { return match_lengths_.data(); }
  std::uint8_t* new_requests() { return new_requests_.data(); }
  // The previous step's outcome of the request each row continues (0 for new requests).
  std::int32_t* previous_given() { return previous_given_.data(); }
  std::int32_t* previous_accepted() { return previous_accepted_.data(); }
  double* previous_probabilities() { return previous_probabilities_.data(); }
  std::uint8_t* previous_sources() { return previous_sources_.data(); }
  // Written by the caller after a step: draft tokens actually handed to row r (read at the
  // next step, then cleared).
  std::int32_t* given() { return given_.data(); }

 private:
  struct Request;
  struct RowPlan {
    Request* request = nullptr;
    bool begins = false;
  };

  template <typename T>
  void step_rows(const T* tokens, const BatchStepInput& input);
  template <typename T>
  bool continues(const Request& request, const T* row, std::size_t prior) const;
  template <typename T>
  static std::uint64_t row_key(const T* row, std::size_t prior);
  void reserve_rows(std::size_t rows);
  void draft_row(std::size_t row, Request& request, std::size_t length);
  // Queues the request's response and frees it (requests_ order changes).
  void finish(Request* request, bool parked_out);
  template <typename T>
  void feed(Request& request, const T* row, std::size_t begin, std::size_t end);

  BatchDrafterOptions options_;
  ScoredDraftOptions scored_options_;
  Segments corpus_;

  mutable std::mutex mutex_;  // step, release_all and the counters
  std::mutex segments_mutex_;
  std::shared_ptr<const Segments> response_segments_;
  std::mutex finished_mutex_;
  std::vector<FinishedResponse> finished_;

  // Every request held, live or parked.
  std::vector<std::unique_ptr<Request>> requests_;
  // The request each row of the last step continued (nullptr: none).
  std::vector<Request*> row_requests_;
  std::uint64_t requests_begun_ = 0;
  std::uint64_t step_index_ = 0;
  // Indexed by DraftSource.
  std::array<double, 4> source_corrections_{1.0, 1.0, 1.0, 1.0};

  // Reused scratch.
  std::vector<RowPlan> plans_;
  std::unordered_multimap<std::uint64_t, Request*> unclaimed_;
  std::vector<Token> feed_;

  std::size_t rows_ = 0;
  std::size_t capacity_ = 0;
  std::uint64_t buffer_generation_ = 0;
  std::vector<std::int32_t> tokens_;
  std::vector<double> probabilities_;
  std::vector<double> path_probabilities_;
  std::vector<std::int32_t> draft_lengths_;
  std::vector<std::uint8_t> sources_;
  std::vector<std::int32_t> match_lengths_;
  std::vector<std::uint8_t> new_requests_;
  std::vector<std::int32_t> previous_given_;
  std::vector<std::int32_t> previous_accepted_;
  std::vector<double> previous_probabilities_;
  std::vector<std::uint8_t> previous_sources_;
  std::vector<std::int32_t> given_;
};

}  // namespace sam
