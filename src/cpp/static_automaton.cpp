#include "static_automaton.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "automaton_builder.hpp"
#include "checksum.hpp"

namespace sam {
namespace {

// ---- File format, version 1 (little-endian) ------------------------------------------------
// [header: kHeaderBytes][sections, each starting at a multiple of kAlignment]
constexpr char kMagic[8] = {'S', 'A', 'M', 'D', 'E', 'C', 'A', '\x1a'};
constexpr std::uint32_t kEndianTag = 0x01020304u;
constexpr std::size_t kHeaderBytes = 512;
constexpr std::size_t kAlignment = 64;

enum Section : std::size_t {
  kFingerprint,
  kMetadata,
  kText,
  kLink,
  kCount,
  kCountOverflow,
  kCloneLength,
  kCloneEnd,
  kEdgeOffset,
  kEdgeToken,
  kEdgeTarget,
  kNumSections
};
constexpr const char* kSectionNames[kNumSections] = {
    "tokenizer fingerprint", "metadata", "text", "suffix links", "occurrence counts",
    "large occurrence counts", "clone lengths", "clone ends", "edge offsets", "edge tokens", "edge targets"};

struct SectionEntry {
  std::uint64_t offset;
  std::uint64_t bytes;
};

struct Header {
  char magic[8];
  std::uint32_t format_version;
  std::uint32_t endian_tag;
  std::uint32_t header_bytes;
  std::uint32_t num_sections;
  std::uint64_t file_bytes;
  std::uint64_t num_tokens;
  std::uint64_t num_documents;
  std::uint64_t text_length;
  std::uint64_t num_states;
  std::uint64_t num_clones;
  std::uint64_t num_edges;
  std::uint32_t vocab_bound;
  std::uint32_t num_count_overflows;
  std::uint64_t payload_checksum;  // of every byte after the header
  std::uint64_t header_checksum;   // of the header with this field zeroed
  SectionEntry sections[kNumSections];
};
static_assert(sizeof(Header) <= kHeaderBytes, "header must fit its reserved space");

// Covers all kHeaderBytes, the zero padding after the fields included.
std::uint64_t header_checksum_of(const std::uint8_t* header_bytes) {
  std::uint8_t copy[kHeaderBytes];
  std::memcpy(copy, header_bytes, kHeaderBytes);
  std::memset(copy + offsetof(Header, header_checksum), 0, sizeof(std::uint64_t));
  return checksum64(copy, kHeaderBytes, 0x5A4D);
}

// a * b into *product; false if it does not fit 64 bits.
bool checked_multiply(std::uint64_t a, std::uint64_t b, std::uint64_t* product) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  *product = a * b;
  return true;
}

std::uint64_t align_up(std::uint64_t value) {
  return (value + kAlignment - 1) / kAlignment * kAlignment;
}

class HeapStorage final : public Storage {
 public:
  explicit HeapStorage(std::size_t size) : bytes_(size, 0) {}
  const std::uint8_t* data() const override { return bytes_.data(); }
  std::uint8_t* mutable_data() { return bytes_.data(); }
  std::size_t size() const override { return bytes_.size(); }

 private:
  std::vector<std::uint8_t> bytes_;
};

class MappedFile final : public Storage {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("cannot open", path);
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
      ::close(fd);
      throw_errno("cannot stat", path);
    }
    if (!S_ISREG(info.st_mode)) {
      ::close(fd);
      throw FormatError("not a regular file: " + path);
    }
    size_ = static_cast<std::size_t>(info.st_size);
    if (size_ > 0) {
      void* mapped = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
      if (mapped == MAP_FAILED) {
        ::close(fd);
        throw_errno("cannot memory-map", path);
      }
      data_ = static_cast<const std::uint8_t*>(mapped);
    }
    ::close(fd);  // the mapping keeps the file alive
  }
  ~MappedFile() override {
    if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
  }
  const std::uint8_t* data() const override { return data_; }
  std::size_t size() const override { return size_; }

 private:
  [[noreturn]] static void throw_errno(const char* action, const std::string& path) {
    throw FormatError(std::string(action) + " " + path + ": " + std::strerror(errno));
  }
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// The frozen arrays, before they are laid out in an image.
struct FrozenArrays {
  std::vector<Token> text;
  std::vector<StateId> link;
  std::vector<std::uint16_t> count;
  std::vector<std::uint32_t> count_overflow;  // (state, count) pairs, sorted by state
  std::vector<std::uint32_t> clone_length;
  std::vector<std::uint32_t> clone_end;
  std::vector<std::uint32_t> edge_offset;
  std::vector<Token> edge_token;
  std::vector<StateId> edge_target;
};

FrozenArrays freeze(AutomatonBuilder& builder, std::vector<Token>&& text) {
  const std::size_t text_length = text.size();
  const std::size_t num_states = builder.num_states();
  const std::size_t num_clones = num_states - 1 - text_length;

  // Renumber: position states by position, then clones in creation order.
  std::vector<StateId> new_id(num_states);
  std::vector<StateId> old_id(num_states);
  new_id[0] = 0;
  old_id[0] = 0;
  StateId next_clone = static_cast<StateId>(text_length + 1);
  for (StateId state = 1; state < num_states; ++state) {
    const StateId id = builder.is_clone(state) ? next_clone++ : builder.first_end(state) + 1;
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
    const Token backbone = (id >= 1 && id < text_length) ? text[id] : kSeparator;
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

template <typename T>
void copy_section(HeapStorage& image, const SectionEntry& entry, const std::vector<T>& values) {
  if (!values.empty()) std::memcpy(image.mutable_data() + entry.offset, values.data(), entry.bytes);
}

}  // namespace

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

  FrozenArrays arrays;
  {
    AutomatonBuilder builder;
    builder.reserve(text.size());
    for (const Token token : text) builder.append(token);
    arrays = freeze(builder, std::move(text));
  }

  Header header{};
  std::memcpy(header.magic, kMagic, sizeof(kMagic));
  header.format_version = kFormatVersion;
  header.endian_tag = kEndianTag;
  header.header_bytes = kHeaderBytes;
  header.num_sections = kNumSections;
  header.num_tokens = input.num_tokens;
  header.num_documents = num_documents;
  header.text_length = arrays.text.size();
  header.num_states = arrays.link.size();
  header.num_clones = arrays.clone_length.size();
  header.num_edges = arrays.edge_token.size();
  header.vocab_bound = max_token + 1;
  header.num_count_overflows = static_cast<std::uint32_t>(arrays.count_overflow.size() / 2);
  const std::uint64_t section_bytes[kNumSections] = {
      input.tokenizer_fingerprint.size(),
      input.metadata.size(),
      arrays.text.size() * sizeof(Token),
      arrays.link.size() * sizeof(StateId),
      arrays.count.size() * sizeof(std::uint16_t),
      arrays.count_overflow.size() * sizeof(std::uint32_t),
      arrays.clone_length.size() * sizeof(std::uint32_t),
      arrays.clone_end.size() * sizeof(std::uint32_t),
      arrays.edge_offset.size() * sizeof(std::uint32_t),
      arrays.edge_token.size() * sizeof(Token),
      arrays.edge_target.size() * sizeof(StateId)};
  std::uint64_t offset = kHeaderBytes;
  for (std::size_t section = 0; section < kNumSections; ++section) {
    header.sections[section] = SectionEntry{offset, section_bytes[section]};
    offset = align_up(offset + section_bytes[section]);
  }
  header.file_bytes = offset;

  auto image = std::make_shared<HeapStorage>(offset);
  std::memcpy(image->mutable_data() + header.sections[kFingerprint].offset,
              input.tokenizer_fingerprint.data(), input.tokenizer_fingerprint.size());
  std::memcpy(image->mutable_data() + header.sections[kMetadata].offset, input.metadata.data(),
              input.metadata.size());
  copy_section(*image, header.sections[kText], arrays.text);
  copy_section(*image, header.sections[kLink], arrays.link);
  copy_section(*image, header.sections[kCount], arrays.count);
  copy_section(*image, header.sections[kCountOverflow], arrays.count_overflow);
  copy_section(*image, header.sections[kCloneLength], arrays.clone_length);
  copy_section(*image, header.sections[kCloneEnd], arrays.clone_end);
  copy_section(*image, header.sections[kEdgeOffset], arrays.edge_offset);
  copy_section(*image, header.sections[kEdgeToken], arrays.edge_token);
  copy_section(*image, header.sections[kEdgeTarget], arrays.edge_target);
  arrays = FrozenArrays{};
  header.payload_checksum =
      checksum64(image->data() + kHeaderBytes, image->size() - kHeaderBytes, 0);
  std::memcpy(image->mutable_data(), &header, sizeof(Header));
  header.header_checksum = header_checksum_of(image->data());
  std::memcpy(image->mutable_data(), &header, sizeof(Header));

  auto automaton = std::shared_ptr<StaticAutomaton>(new StaticAutomaton());
  automaton->attach(std::move(image), false);
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
  const std::uint8_t* bytes = storage->data();
  const std::size_t size = storage->size();
  if (size < sizeof(kMagic) || std::memcmp(bytes, kMagic, sizeof(kMagic)) != 0) {
    throw FormatError("not a sam-decoding automaton file (bad magic bytes)");
  }
  if (size < kHeaderBytes) throw FormatError("truncated file: the header is incomplete");
  Header header;
  std::memcpy(&header, bytes, sizeof(Header));
  if (header.endian_tag != kEndianTag) {
    throw FormatError("automaton file has a foreign byte order or a corrupted header");
  }
  if (header.format_version > kFormatVersion) {
    throw FormatError("automaton file has format version " +
                      std::to_string(header.format_version) +
                      ", newer than this sam-decoding reads (" + std::to_string(kFormatVersion) +
                      "); upgrade sam-decoding");
  }
  if (header.format_version != kFormatVersion || header.header_bytes != kHeaderBytes ||
      header.num_sections != kNumSections || header_checksum_of(bytes) != header.header_checksum) {
    throw FormatError("corrupted automaton file: header checksum mismatch");
  }
  if (header.file_bytes != size) {
    throw FormatError(size < header.file_bytes
                          ? "truncated automaton file: " + std::to_string(size) + " of " +
                                std::to_string(header.file_bytes) + " bytes"
                          : "automaton file has trailing bytes: " + std::to_string(size) +
                                " instead of " + std::to_string(header.file_bytes));
  }
  // Every field below comes from the file. Each one is bounded on its own first, and every
  // product and sum is computed with overflow checks, so that fields forged together cannot
  // keep the relations true modulo 2^64 while pointing the queries outside the mapping.
  auto inconsistent = [] {
    throw FormatError("corrupted automaton file: inconsistent sizes in the header");
  };
  if (header.text_length == 0 || header.text_length > kMaxTextLength ||
      header.num_tokens > header.text_length || header.num_documents == 0 ||
      header.num_documents > header.text_length ||
      header.num_tokens + header.num_documents != header.text_length ||
      // A suffix automaton over n tokens has at most 2n-1 states: fewer than n clones.
      header.num_clones >= header.text_length ||
      header.num_states != header.text_length + 1 + header.num_clones ||
      header.num_states >= kNoState || header.num_edges > std::numeric_limits<std::uint32_t>::max() ||
      header.num_count_overflows > header.num_states || header.vocab_bound > kMaxToken + 1u) {
    inconsistent();
  }
  std::uint64_t expected_bytes[kNumSections] = {header.sections[kFingerprint].bytes,
                                                header.sections[kMetadata].bytes};
  const std::pair<std::uint64_t, std::uint64_t> counted[kNumSections] = {
      {0, 0},
      {0, 0},
      {header.text_length, sizeof(Token)},
      {header.num_states, sizeof(StateId)},
      {header.num_states, sizeof(std::uint16_t)},
      {header.num_count_overflows, 2 * sizeof(std::uint32_t)},
      {header.num_clones, sizeof(std::uint32_t)},
      {header.num_clones, sizeof(std::uint32_t)},
      {header.num_states + 1, sizeof(std::uint32_t)},
      {header.num_edges, sizeof(Token)},
      {header.num_edges, sizeof(StateId)}};
  for (std::size_t section = kText; section < kNumSections; ++section) {
    if (!checked_multiply(counted[section].first, counted[section].second, &expected_bytes[section])) {
      inconsistent();
    }
  }
  std::uint64_t previous_end = kHeaderBytes;
  for (std::size_t section = 0; section < kNumSections; ++section) {
    const SectionEntry& entry = header.sections[section];
    // Sections lie in order, without overlap, inside the file.
    if (entry.bytes != expected_bytes[section] || entry.offset % kAlignment != 0 ||
        entry.offset < previous_end || entry.offset > size || entry.bytes > size - entry.offset) {
      throw FormatError(std::string("corrupted automaton file: bad section '") +
                        kSectionNames[section] + "'");
    }
    previous_end = entry.offset + entry.bytes;  // no overflow: both are within `size`
  }
  if (verify_payload &&
      checksum64(bytes + kHeaderBytes, size - kHeaderBytes, 0) != header.payload_checksum) {
    throw FormatError("corrupted automaton file: payload checksum mismatch");
  }

  auto section_of = [&](Section section) {
    return reinterpret_cast<const std::uint32_t*>(bytes + header.sections[section].offset);
  };
  num_tokens_ = header.num_tokens;
  num_documents_ = header.num_documents;
  text_length_ = header.text_length;
  num_states_ = header.num_states;
  num_clones_ = header.num_clones;
  num_edges_ = header.num_edges;
  vocab_bound_ = header.vocab_bound;
  fingerprint_.assign(reinterpret_cast<const char*>(bytes + header.sections[kFingerprint].offset),
                      header.sections[kFingerprint].bytes);
  metadata_.assign(reinterpret_cast<const char*>(bytes + header.sections[kMetadata].offset),
                   header.sections[kMetadata].bytes);
  text_ = section_of(kText);
  link_ = section_of(kLink);
  count_ = reinterpret_cast<const std::uint16_t*>(bytes + header.sections[kCount].offset);
  count_overflow_ = section_of(kCountOverflow);
  num_count_overflows_ = header.num_count_overflows;
  clone_length_ = section_of(kCloneLength);
  clone_end_ = section_of(kCloneEnd);
  edge_offset_ = section_of(kEdgeOffset);
  edge_token_ = section_of(kEdgeToken);
  edge_target_ = section_of(kEdgeTarget);
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
  Header header;
  std::memcpy(&header, storage_->data(), sizeof(Header));
  if (checksum64(storage_->data() + kHeaderBytes, storage_->size() - kHeaderBytes, 0) !=
      header.payload_checksum) {
    throw FormatError("corrupted automaton file: payload checksum mismatch");
  }
  for (StateId state = 0; state < num_states_; ++state) {
    if (link_[state] >= num_states_ || (state != 0 && length(link_[state]) >= length(state))) {
      corrupt("suffix links");
    }
    if (state > text_length_ && clone_end_[state - text_length_ - 1] >= text_length_) {
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
  if (state >= 1 && state < text_length_ && text_[state] == token) return state + 1;
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
  return state <= text_length_ ? state : clone_length_[state - text_length_ - 1];
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
  const std::uint32_t end =
      state <= text_length_ ? state - 1 : clone_end_[state - text_length_ - 1];
  if (end >= text_length_) corrupt("occurrence end");
  return end;
}

Token StaticAutomaton::text_at(std::uint64_t position) const {
  return position < text_length_ ? text_[position] : kSeparator;
}

std::uint32_t StaticAutomaton::out_degree(StateId state) const {
  check_state(state);
  const std::uint32_t begin = edge_offset_[state];
  const std::uint32_t end = edge_offset_[state + 1];
  if (begin > end || end > num_edges_) corrupt("edge offsets");
  const bool backbone = state >= 1 && state < text_length_ && text_[state] != kSeparator;
  return end - begin + (backbone ? 1 : 0);
}

}  // namespace sam
