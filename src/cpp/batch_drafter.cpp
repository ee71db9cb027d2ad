#include "batch_drafter.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace sam {

struct BatchDrafter::Request {
  DynamicAutomaton text_automaton;
  std::unique_ptr<ShardedCursor> corpus;
  std::unique_ptr<ShardedCursor> responses;
  // Everything read so far: the prompt, then the response.
  std::vector<Token> text;
  std::size_t prompt_length = 0;
  // Index in requests_.
  std::size_t index = 0;
  // The step that last claimed a row for it.
  std::uint64_t claimed_step = 0;
  // Consecutive steps it was missing from the batch.
  std::uint32_t missing_steps = 0;
  // Row of the last step it was in (its draft was handed there), or -1.
  std::int64_t last_row = -1;
  // The last draft it got, and what the caller said it handed of it.
  std::vector<double> last_probabilities;
  std::int32_t last_draft_length = 0;
  DraftSource last_source = DraftSource::kNone;
  std::int32_t last_given = 0;
};

namespace {

std::uint64_t mix(std::uint64_t hash, std::uint64_t value) {
  // splitmix64's finalizer over the running hash: cheap and well spread.
  hash ^= value + 0x9E3779B97F4A7C15ull + (hash << 6) + (hash >> 2);
  hash ^= hash >> 30;
  hash *= 0xBF58476D1CE4E5B9ull;
  hash ^= hash >> 27;
  hash *= 0x94D049BB133111EBull;
  return hash ^ (hash >> 31);
}

template <typename T>
bool valid_token(T value) {
  return value >= 0 && static_cast<std::int64_t>(value) <= static_cast<std::int64_t>(kMaxToken);
}

}  // namespace

BatchDrafter::BatchDrafter(Segments corpus, const BatchDrafterOptions& options)
    : options_(options), corpus_(std::move(corpus)) {
  if (options.max_draft == 0) throw InputError("max_draft must be >= 1");
  if (!(options.min_probability >= 0.0 && options.min_probability <= 1.0)) {
    throw InputError("min_probability must be in [0, 1]");
  }
  if (!(options.trusted_length >= 0.0)) throw InputError("trusted_length must be >= 0");
  if (options.max_orders == 0) throw InputError("max_orders must be >= 1");
  if (options.max_model_len == 0) throw InputError("max_model_len must be >= 1");
  for (const auto& shard : corpus_) {
    if (!shard) throw InputError("corpus shards must not be null");
  }
  scored_options_.max_nodes = options.max_draft;
  scored_options_.max_depth = options.max_draft;
  scored_options_.min_path_probability = options.min_probability;
  scored_options_.max_orders = options.max_orders;
  scored_options_.enough_occurrences = options.enough_occurrences;
  scored_options_.trusted_length = options.trusted_length;
  scored_options_.chain = true;
}

BatchDrafter::~BatchDrafter() = default;

void BatchDrafter::set_source_corrections(double text, double corpus, double responses) {
  for (const double correction : {text, corpus, responses}) {
    if (!(correction > 0.0) || !std::isfinite(correction)) {
      throw InputError("source corrections must be positive finite numbers, got " + std::to_string(correction));
    }
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  source_corrections_ = {1.0, text, corpus, responses};
}

namespace {

// Expected accepted tokens of a chain whose per-node estimates are scaled by `correction`.
double corrected_expected_tokens(const ScoredDraft& draft, double correction) {
  double path = 1.0;
  double expected = 0.0;
  for (const double probability : draft.probabilities) {
    path *= std::min(probability * correction, 1.0);
    expected += path;
  }
  return expected;
}

}  // namespace

void BatchDrafter::set_response_segments(Segments segments) {
  for (const auto& segment : segments) {
    if (!segment) throw InputError("response segments must not be null");
  }
  auto shared = segments.empty() ? nullptr : std::make_shared<const Segments>(std::move(segments));
  const std::lock_guard<std::mutex> lock(segments_mutex_);
  response_segments_ = std::move(shared);
}

std::vector<FinishedResponse> BatchDrafter::take_finished() {
  std::vector<FinishedResponse> taken;
  const std::lock_guard<std::mutex> lock(finished_mutex_);
  taken.swap(finished_);
  return taken;
}

void BatchDrafter::release_all() {
  const std::lock_guard<std::mutex> lock(mutex_);
  while (!requests_.empty()) finish(requests_.back().get(), false);
  std::fill(row_requests_.begin(), row_requests_.end(), nullptr);
}

std::size_t BatchDrafter::num_live() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  std::size_t live = 0;
  for (const auto& request : requests_) live += request->missing_steps == 0 ? 1 : 0;
  return live;
}

std::size_t BatchDrafter::num_parked() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  std::size_t parked = 0;
  for (const auto& request : requests_) parked += request->missing_steps != 0 ? 1 : 0;
  return parked;
}

std::uint64_t BatchDrafter::requests_begun() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return requests_begun_;
}

void BatchDrafter::finish(Request* request, bool parked_out) {
  if (request->text.size() > request->prompt_length) {
    FinishedResponse response;
    response.tokens.assign(request->text.begin() + static_cast<std::ptrdiff_t>(request->prompt_length),
                           request->text.end());
    response.parked_out = parked_out;
    const std::lock_guard<std::mutex> lock(finished_mutex_);
    finished_.push_back(std::move(response));
  }
  const std::size_t index = request->index;
  if (index + 1 != requests_.size()) {
    std::swap(requests_[index], requests_.back());
    requests_[index]->index = index;
  }
  requests_.pop_back();
}

void BatchDrafter::step(const BatchStepInput& input) {
  if ((input.tokens32 == nullptr) == (input.tokens64 == nullptr)) {
    throw InputError("exactly one token table (int32 or int64) must be given");
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  if (input.tokens32 != nullptr) {
    step_rows(input.tokens32, input);
  } else {
    step_rows(input.tokens64, input);
  }
}

void BatchDrafter::draft_rows() {
  const std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t r = 0; r < rows_; ++r) {
    Request* request = row_requests_[r];
    // Only rows that decoded at the last step point their request back at themselves.
    if (request != nullptr && request->last_row == static_cast<std::int64_t>(r)) {
      draft_row(r, *request, request->text.size());
    }
  }
}

template <typename T>
std::uint64_t BatchDrafter::row_key(const T* row, std::size_t prior) {
  // The text length and a few tokens at positions that depend only on it: a request's key is
  // computed from its own text exactly as a row's from the row.
  std::uint64_t hash = mix(0, prior);
  if (prior == 0) return hash;
  const std::size_t positions[] = {0, 1, prior / 2, prior - 1, prior >= 2 ? prior - 2 : 0,
                                   prior >= 3 ? prior - 3 : 0};
  for (const std::size_t position : positions) {
    if (position < prior) {
      hash = mix(hash, static_cast<std::uint64_t>(static_cast<std::int64_t>(row[position])));
    }
  }
  return hash;
}

template <typename T>
bool BatchDrafter::continues(const Request& request, const T* row, std::size_t prior) const {
  // The exact length rule: the row's text before this step's tokens is what the request read.
  // (A follow-up turn whose prompt extends a finished request's text is longer, so it begins.)
  if (request.text.size() != prior) return false;
  const auto same = [&](std::size_t position) {
    return position >= prior ||
           static_cast<std::int64_t>(row[position]) == static_cast<std::int64_t>(request.text[position]);
  };
  const std::size_t prompt = request.prompt_length;
  if (prompt > 0 && !(same(0) && same(prompt / 2) && same(prompt - 1))) return false;
  for (std::size_t back = 1; back <= 4 && back <= prior; ++back) {
    if (!same(prior - back)) return false;
  }
  return true;
}

void BatchDrafter::reserve_rows(std::size_t rows) {
  if (rows <= capacity_) return;
  std::size_t capacity = std::max<std::size_t>(capacity_ * 2, 8);
  while (capacity < rows) capacity *= 2;
  const std::size_t k = options_.max_draft;
  tokens_.assign(capacity * k, 0);
  probabilities_.assign(capacity * k, 0.0);
  path_probabilities_.assign(capacity * k, 0.0);
  draft_lengths_.assign(capacity, 0);
  sources_.assign(capacity, 0);
  match_lengths_.assign(capacity, 0);
  new_requests_.assign(capacity, 0);
  previous_given_.assign(capacity, 0);
  previous_accepted_.assign(capacity, 0);
  previous_probabilities_.assign(capacity * k, 0.0);
  previous_sources_.assign(capacity, 0);
  given_.assign(capacity, 0);
  capacity_ = capacity;
  ++buffer_generation_;
}

template <typename T>
void BatchDrafter::feed(Request& request, const T* row, std::size_t begin, std::size_t end) {
  if (end <= begin) return;
  feed_.resize(end - begin);
  for (std::size_t position = begin; position < end; ++position) {
    feed_[position - begin] = static_cast<Token>(row[position]);
  }
  request.text_automaton.extend(feed_.data(), feed_.size());
  if (request.corpus) request.corpus->feed(feed_.data(), feed_.size());
  if (request.responses) request.responses->feed(feed_.data(), feed_.size());
  request.text.insert(request.text.end(), feed_.begin(), feed_.end());
}

template <typename T>
void BatchDrafter::step_rows(const T* tokens, const BatchStepInput& input) {
  const std::size_t rows = input.rows;
  const std::size_t stride = input.stride;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int64_t length = input.lengths[r];
    const std::int64_t sampled = input.sampled[r];
    if (length < 0 || static_cast<std::uint64_t>(length) > stride) {
      throw InputError("lengths[" + std::to_string(r) + "] = " + std::to_string(length) +
                       " is outside [0, " + std::to_string(stride) + "] (the token table's row width)");
    }
    if (sampled < 0 || sampled > length) {
      throw InputError("sampled[" + std::to_string(r) + "] = " + std::to_string(sampled) +
                       " is outside [0, lengths[" + std::to_string(r) + "] = " +
                       std::to_string(length) + "]");
    }
  }
  const std::uint64_t step = ++step_index_;
  const auto row_of = [&](std::size_t r) { return tokens + r * stride; };

  // Which request each row continues: the one that held the row, else any unclaimed request with
  // the same text (found by a hash of a few tokens, verified in full), else a new one.
  plans_.assign(rows, RowPlan{});
  bool unmatched = false;
  for (std::size_t r = 0; r < rows; ++r) {
    Request* request = r < row_requests_.size() ? row_requests_[r] : nullptr;
    const auto length = static_cast<std::size_t>(input.lengths[r]);
    const std::size_t prior = length - static_cast<std::size_t>(input.sampled[r]);
    if (request != nullptr && request->claimed_step != step && continues(*request, row_of(r), prior)) {
      request->claimed_step = step;
      plans_[r].request = request;
    } else {
      unmatched = true;
    }
  }
  if (unmatched) {
    unclaimed_.clear();
    for (const auto& request : requests_) {
      if (request->claimed_step != step) {
        unclaimed_.emplace(row_key(request->text.data(), request->text.size()), request.get());
      }
    }
    for (std::size_t r = 0; r < rows; ++r) {
      if (plans_[r].request != nullptr) continue;
      const auto length = static_cast<std::size_t>(input.lengths[r]);
      const std::size_t prior = length - static_cast<std::size_t>(input.sampled[r]);
      const T* row = row_of(r);
      const auto range = unclaimed_.equal_range(row_key(row, prior));
      for (auto it = range.first; it != range.second; ++it) {
        Request* request = it->second;
        if (request->claimed_step == step || request->text.size() != prior) continue;
        bool equal = true;
        for (std::size_t position = 0; position < prior && equal; ++position) {
          equal = static_cast<std::int64_t>(row[position]) == static_cast<std::int64_t>(request->text[position]);
        }
        if (equal) {
          request->claimed_step = step;
          plans_[r].request = request;
          break;
        }
      }
      if (plans_[r].request == nullptr && input.sampled[r] > 0) plans_[r].begins = true;
    }
  }

  // Every token about to be read is checked before anything changes.
  for (std::size_t r = 0; r < rows; ++r) {
    if (plans_[r].request == nullptr && !plans_[r].begins) continue;
    const auto length = static_cast<std::size_t>(input.lengths[r]);
    const std::size_t begin = plans_[r].begins ? 0 : length - static_cast<std::size_t>(input.sampled[r]);
    const T* row = row_of(r);
    for (std::size_t position = begin; position < length; ++position) {
      if (!valid_token(row[position])) {
        throw InputError("token_ids[" + std::to_string(r) + ", " + std::to_string(position) +
                         "] = " + std::to_string(static_cast<std::int64_t>(row[position])) +
                         " is outside [0, 2^31-1]");
      }
    }
  }

  // What the caller handed each request's last draft.
  for (const auto& request : requests_) {
    if (request->last_row >= 0 && static_cast<std::size_t>(request->last_row) < capacity_) {
      const std::int32_t given = given_[static_cast<std::size_t>(request->last_row)];
      request->last_given = std::clamp<std::int32_t>(given, 0, request->last_draft_length);
    }
  }

  reserve_rows(rows);
  const std::size_t k = options_.max_draft;
  std::fill_n(tokens_.begin(), rows * k, 0);
  std::fill_n(probabilities_.begin(), rows * k, 0.0);
  std::fill_n(path_probabilities_.begin(), rows * k, 0.0);
  std::fill_n(draft_lengths_.begin(), rows, 0);
  std::fill_n(sources_.begin(), rows, 0);
  std::fill_n(match_lengths_.begin(), rows, 0);
  std::fill_n(new_requests_.begin(), rows, 0);
  std::fill_n(previous_given_.begin(), rows, 0);
  std::fill_n(previous_accepted_.begin(), rows, 0);
  std::fill_n(previous_sources_.begin(), rows, 0);
  std::fill_n(previous_probabilities_.begin(), rows * k, 0.0);
  std::fill_n(given_.begin(), capacity_, 0);

  std::shared_ptr<const Segments> segments;
  {
    const std::lock_guard<std::mutex> segments_lock(segments_mutex_);
    segments = response_segments_;
  }
  row_requests_.assign(rows, nullptr);
  for (std::size_t r = 0; r < rows; ++r) {
    RowPlan& plan = plans_[r];
    const auto length = static_cast<std::size_t>(input.lengths[r]);
    const auto sampled = static_cast<std::size_t>(input.sampled[r]);
    const std::size_t prior = length - sampled;
    if (plan.begins) {
      auto owned = std::make_unique<Request>();
      owned->index = requests_.size();
      owned->claimed_step = step;
      owned->last_probabilities.assign(k, 0.0);
      if (!corpus_.empty()) owned->corpus = std::make_unique<ShardedCursor>(corpus_);
      if (segments) owned->responses = std::make_unique<ShardedCursor>(*segments);
      owned->prompt_length = prior;
      owned->text.reserve(length + 64);
      plan.request = owned.get();
      requests_.push_back(std::move(owned));
      ++requests_begun_;
      new_requests_[r] = 1;
      feed(*plan.request, row_of(r), 0, length);
    } else if (plan.request != nullptr && sampled > 0) {
      Request& request = *plan.request;
      previous_given_[r] = request.last_given;
      previous_accepted_[r] = std::min<std::int32_t>(static_cast<std::int32_t>(sampled) - 1, request.last_given);
      previous_sources_[r] = static_cast<std::uint8_t>(request.last_source);
      // Only the handed nodes: the rest of the slots stay 0.
      std::copy_n(request.last_probabilities.begin(), request.last_given,
                  previous_probabilities_.begin() + static_cast<std::ptrdiff_t>(r * k));
      request.last_given = 0;
      request.last_draft_length = 0;
      request.last_source = DraftSource::kNone;
      feed(request, row_of(r), prior, length);
    }
    if (plan.request == nullptr) continue;
    Request& request = *plan.request;
    request.missing_steps = 0;
    row_requests_[r] = plan.request;
    // A row that did not decode gets no draft, and keeps the request's last outcome for later.
    request.last_row = sampled > 0 ? static_cast<std::int64_t>(r) : -1;
    if (sampled > 0 && input.draft) draft_row(r, request, length);
  }

  // Requests missing from this step are parked; past park_steps they are finished.
  for (std::size_t index = 0; index < requests_.size();) {
    Request* request = requests_[index].get();
    if (request->claimed_step == step) {
      ++index;
      continue;
    }
    request->last_row = -1;
    if (++request->missing_steps > options_.park_steps) {
      finish(request, true);  // swaps the last request into `index`
    } else {
      ++index;
    }
  }
  rows_ = rows;
}

void BatchDrafter::draft_row(std::size_t row, Request& request, std::size_t length) {
  const std::size_t k = options_.max_draft;
  request.last_draft_length = 0;
  request.last_source = DraftSource::kNone;
  std::fill(request.last_probabilities.begin(), request.last_probabilities.end(), 0.0);
  if (length >= options_.max_model_len) return;
  const std::size_t depth = std::min(k, options_.max_model_len - length);
  ScoredDraftOptions options = scored_options_;
  options.max_nodes = depth;
  options.max_depth = depth;

  ScoredDraft best;
  double best_expected = 0.0;
  DraftSource best_source = DraftSource::kNone;
  const auto consider = [&](ScoredDraft draft, DraftSource source) {
    if (draft.tokens.empty()) return;
    // Ties keep the earlier source (text, corpus, responses), as a stable sort would.
    const double expected = corrected_expected_tokens(draft, source_corrections_[static_cast<std::size_t>(source)]);
    if (best_source == DraftSource::kNone || expected > best_expected) {
      best = std::move(draft);
      best_expected = expected;
      best_source = source;
    }
  };
  consider(request.text_automaton.scored_draft(options), DraftSource::kText);
  if (request.corpus) consider(request.corpus->scored_draft(options), DraftSource::kCorpus);
  if (request.responses) consider(request.responses->scored_draft(options), DraftSource::kResponses);
  if (best_source == DraftSource::kNone) return;

  const std::size_t n = std::min(best.tokens.size(), depth);
  const std::size_t offset = row * k;
  for (std::size_t i = 0; i < n; ++i) {
    tokens_[offset + i] = best.tokens[i];
    probabilities_[offset + i] = best.probabilities[i];
    path_probabilities_[offset + i] = best.path_probabilities[i];
  }
  draft_lengths_[row] = static_cast<std::int32_t>(n);
  sources_[row] = static_cast<std::uint8_t>(best_source);
  match_lengths_[row] = static_cast<std::int32_t>(best.match_length);
  request.last_draft_length = static_cast<std::int32_t>(n);
  request.last_source = best_source;
  std::copy_n(best.probabilities.begin(), n, request.last_probabilities.begin());
}

}  // namespace sam
