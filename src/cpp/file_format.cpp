#include "file_format.hpp"

#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "checksum.hpp"

namespace sam {
namespace {

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
  // Version 2 on; zero in version 1 files (their header padding).
  std::uint32_t token_bytes;
  std::uint32_t reserved;
};
static_assert(sizeof(Header) <= kHeaderBytes, "header must fit its reserved space");
// Where version 1 files end their fields: the token width of version 2 follows the section table.
static_assert(offsetof(Header, token_bytes) == 280, "the version 1 fields must keep their places");

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

// Bytes per stored token: 16 bits when every token id and the separator fit.
std::uint32_t token_bytes_for(std::uint32_t vocab_bound) {
  return vocab_bound <= kNarrowSeparator ? sizeof(std::uint16_t) : sizeof(Token);
}

// Copies `tokens` into the image at `entry`, narrowed to 16 bits if `token_bytes` is 2, then
// frees them.
void move_tokens(HeapStorage& image, const SectionEntry& entry, std::uint32_t token_bytes,
                 std::vector<Token>* tokens) {
  if (token_bytes == sizeof(Token)) {
    if (!tokens->empty()) std::memcpy(image.mutable_data() + entry.offset, tokens->data(), entry.bytes);
  } else {
    auto* narrow = reinterpret_cast<std::uint16_t*>(image.mutable_data() + entry.offset);
    for (std::size_t index = 0; index < tokens->size(); ++index) {
      const Token token = (*tokens)[index];
      narrow[index] = token == kSeparator ? kNarrowSeparator : static_cast<std::uint16_t>(token);
    }
  }
  std::vector<Token>().swap(*tokens);
  release_free_heap_memory();
}

// Copies `values` into the image at `entry`, then frees them.
template <typename T>
void move_section(HeapStorage& image, const SectionEntry& entry, std::vector<T>* values) {
  if (!values->empty()) std::memcpy(image.mutable_data() + entry.offset, values->data(), entry.bytes);
  std::vector<T>().swap(*values);
  release_free_heap_memory();
}

}  // namespace

std::shared_ptr<HeapStorage> write_image(FrozenArrays&& arrays, const ImageSummary& summary) {
  Header header{};
  std::memcpy(header.magic, kMagic, sizeof(kMagic));
  header.format_version = kFormatVersion;
  header.endian_tag = kEndianTag;
  header.header_bytes = kHeaderBytes;
  header.num_sections = kNumSections;
  header.num_tokens = summary.num_tokens;
  header.num_documents = summary.num_documents;
  header.text_length = arrays.text.size();
  header.num_states = arrays.link.size();
  header.num_clones = arrays.clone_length.size();
  header.num_edges = arrays.edge_token.size();
  header.vocab_bound = summary.vocab_bound;
  header.num_count_overflows = static_cast<std::uint32_t>(arrays.count_overflow.size() / 2);
  header.token_bytes = token_bytes_for(summary.vocab_bound);
  const std::uint64_t section_bytes[kNumSections] = {
      summary.tokenizer_fingerprint.size(),
      summary.metadata.size(),
      arrays.text.size() * header.token_bytes,
      arrays.link.size() * sizeof(StateId),
      arrays.count.size() * sizeof(std::uint16_t),
      arrays.count_overflow.size() * sizeof(std::uint32_t),
      arrays.clone_length.size() * sizeof(std::uint32_t),
      arrays.clone_end.size() * sizeof(std::uint32_t),
      arrays.edge_offset.size() * sizeof(std::uint32_t),
      arrays.edge_token.size() * header.token_bytes,
      arrays.edge_target.size() * sizeof(StateId)};
  std::uint64_t offset = kHeaderBytes;
  for (std::size_t section = 0; section < kNumSections; ++section) {
    header.sections[section] = SectionEntry{offset, section_bytes[section]};
    offset = align_up(offset + section_bytes[section]);
  }
  header.file_bytes = offset;

  auto image = std::make_shared<HeapStorage>(offset);
  std::memcpy(image->mutable_data() + header.sections[kFingerprint].offset,
              summary.tokenizer_fingerprint.data(), summary.tokenizer_fingerprint.size());
  std::memcpy(image->mutable_data() + header.sections[kMetadata].offset, summary.metadata.data(),
              summary.metadata.size());
  // Each array is freed as soon as it is copied, so the image and the arrays overlap little.
  move_tokens(*image, header.sections[kText], header.token_bytes, &arrays.text);
  move_section(*image, header.sections[kLink], &arrays.link);
  move_section(*image, header.sections[kCount], &arrays.count);
  move_section(*image, header.sections[kCountOverflow], &arrays.count_overflow);
  move_section(*image, header.sections[kCloneLength], &arrays.clone_length);
  move_section(*image, header.sections[kCloneEnd], &arrays.clone_end);
  move_section(*image, header.sections[kEdgeOffset], &arrays.edge_offset);
  move_tokens(*image, header.sections[kEdgeToken], header.token_bytes, &arrays.edge_token);
  move_section(*image, header.sections[kEdgeTarget], &arrays.edge_target);
  header.payload_checksum =
      checksum64(image->data() + kHeaderBytes, image->size() - kHeaderBytes, 0);
  std::memcpy(image->mutable_data(), &header, sizeof(Header));
  header.header_checksum = header_checksum_of(image->data());
  std::memcpy(image->mutable_data(), &header, sizeof(Header));

  return image;
}

ImageView read_image(const std::uint8_t* bytes, std::size_t size, bool verify_payload) {
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
  if (header.format_version < kOldestFormatVersion || header.header_bytes != kHeaderBytes ||
      header.num_sections != kNumSections || header_checksum_of(bytes) != header.header_checksum) {
    throw FormatError("corrupted automaton file: header checksum mismatch");
  }
  // Version 1 stored 4-byte tokens and kept this field zero.
  const std::uint32_t token_bytes = header.format_version == 1 ? sizeof(Token) : header.token_bytes;
  if ((header.format_version == 1 && header.token_bytes != 0) || header.reserved != 0 ||
      (token_bytes != sizeof(Token) && token_bytes != sizeof(std::uint16_t)) ||
      (token_bytes == sizeof(std::uint16_t) && header.vocab_bound > kNarrowSeparator)) {
    throw FormatError("corrupted automaton file: bad token width in the header");
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
      {header.text_length, token_bytes},
      {header.num_states, sizeof(StateId)},
      {header.num_states, sizeof(std::uint16_t)},
      {header.num_count_overflows, 2 * sizeof(std::uint32_t)},
      {header.num_clones, sizeof(std::uint32_t)},
      {header.num_clones, sizeof(std::uint32_t)},
      {header.num_states + 1, sizeof(std::uint32_t)},
      {header.num_edges, token_bytes},
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

  ImageView view;
  auto section_of = [&](Section section) {
    return reinterpret_cast<const std::uint32_t*>(bytes + header.sections[section].offset);
  };
  view.num_tokens = header.num_tokens;
  view.num_documents = header.num_documents;
  view.text_length = header.text_length;
  view.num_states = header.num_states;
  view.num_clones = header.num_clones;
  view.num_edges = header.num_edges;
  view.vocab_bound = header.vocab_bound;
  view.num_count_overflows = header.num_count_overflows;
  view.fingerprint.assign(reinterpret_cast<const char*>(bytes + header.sections[kFingerprint].offset),
                          header.sections[kFingerprint].bytes);
  view.metadata.assign(reinterpret_cast<const char*>(bytes + header.sections[kMetadata].offset),
                       header.sections[kMetadata].bytes);
  auto tokens_of = [&](Section section) {
    const std::uint8_t* start = bytes + header.sections[section].offset;
    return token_bytes == sizeof(Token)
               ? TokenArrayView::wide(reinterpret_cast<const Token*>(start))
               : TokenArrayView::narrow(reinterpret_cast<const std::uint16_t*>(start));
  };
  view.format_version = header.format_version;
  view.text = tokens_of(kText);
  view.link = section_of(kLink);
  view.count = reinterpret_cast<const std::uint16_t*>(bytes + header.sections[kCount].offset);
  view.count_overflow = section_of(kCountOverflow);
  view.clone_length = section_of(kCloneLength);
  view.clone_end = section_of(kCloneEnd);
  view.edge_offset = section_of(kEdgeOffset);
  view.edge_token = tokens_of(kEdgeToken);
  view.edge_target = section_of(kEdgeTarget);
  return view;
}

bool payload_checksum_matches(const std::uint8_t* bytes, std::size_t size) {
  Header header;
  std::memcpy(&header, bytes, sizeof(Header));
  return checksum64(bytes + kHeaderBytes, size - kHeaderBytes, 0) == header.payload_checksum;
}

}  // namespace sam
