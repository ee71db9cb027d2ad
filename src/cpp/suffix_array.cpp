#include "suffix_array.hpp"

#include <algorithm>
#include <limits>

namespace sam {
namespace {

constexpr SuffixIndex kEmpty = -1;
// Up to this many distinct symbols the first level indexes its buckets by token value directly;
// beyond it the text is first renumbered densely (a vocabulary that sparse is rare).
constexpr Token kMaxDirectAlphabet = Token{1} << 24;

// The reversed text seen through a map that keeps the order of values: tokens as they are, the
// separator (the largest uint32) as `separator_symbol`, one past the largest token.
class ReversedTokens {
 public:
  ReversedTokens(const Token* text, SuffixIndex size, Token separator_symbol)
      : last_(text + size - 1), separator_symbol_(separator_symbol) {}
  Token operator[](SuffixIndex index) const {
    const Token token = *(last_ - index);
    return token == kSeparator ? separator_symbol_ : token;
  }

 private:
  const Token* last_;
  Token separator_symbol_;
};

// Whether each position is S-type (its suffix is smaller than the next one) or L-type.
class SuffixTypes {
 public:
  explicit SuffixTypes(SuffixIndex size) : words_((static_cast<std::size_t>(size) + 63) / 64, 0) {}
  bool is_s(SuffixIndex index) const { return (words_[index >> 6] >> (index & 63)) & 1u; }
  void set_s(SuffixIndex index) { words_[index >> 6] |= std::uint64_t{1} << (index & 63); }
  // Leftmost S-type position of a run: where the LMS substrings of SA-IS start.
  bool is_lms(SuffixIndex index) const { return index > 0 && is_s(index) && !is_s(index - 1); }

 private:
  std::vector<std::uint64_t> words_;
};

template <typename Text>
SuffixTypes classify(const Text& text, SuffixIndex size) {
  SuffixTypes types(size);
  // The last suffix is L-type: the (virtual) end of the string is smaller than any symbol.
  bool is_s = false;
  for (SuffixIndex index = size - 1; index-- > 0;) {
    const auto here = text[index];
    const auto next = text[index + 1];
    is_s = here < next || (here == next && is_s);  // is_s held the type of index + 1
    if (is_s) types.set_s(index);
  }
  return types;
}

// Bucket boundaries by symbol: heads (first slot) or ends (one past the last slot).
void bucket_heads(const std::vector<SuffixIndex>& counts, std::vector<SuffixIndex>* buckets) {
  SuffixIndex sum = 0;
  for (std::size_t symbol = 0; symbol < counts.size(); ++symbol) {
    (*buckets)[symbol] = sum;
    sum += counts[symbol];
  }
}
void bucket_ends(const std::vector<SuffixIndex>& counts, std::vector<SuffixIndex>* buckets) {
  SuffixIndex sum = 0;
  for (std::size_t symbol = 0; symbol < counts.size(); ++symbol) {
    sum += counts[symbol];
    (*buckets)[symbol] = sum;
  }
}

// From LMS suffixes already at the ends of their buckets, sorts the L-type suffixes (left to
// right), then all S-type ones (right to left), each from the suffix one position later.
template <typename Text>
void induce(const Text& text, SuffixIndex size, const SuffixTypes& types,
            const std::vector<SuffixIndex>& counts, SuffixIndex* suffixes) {
  std::vector<SuffixIndex> buckets(counts.size());
  bucket_heads(counts, &buckets);
  // The virtual end-of-string suffix comes first; the suffix before it is L-type.
  suffixes[buckets[text[size - 1]]++] = size - 1;
  for (SuffixIndex rank = 0; rank < size; ++rank) {
    const SuffixIndex previous = suffixes[rank] - 1;
    if (previous >= 0 && !types.is_s(previous)) suffixes[buckets[text[previous]]++] = previous;
  }
  bucket_ends(counts, &buckets);
  for (SuffixIndex rank = size; rank-- > 0;) {
    const SuffixIndex previous = suffixes[rank] - 1;
    if (previous >= 0 && types.is_s(previous)) suffixes[--buckets[text[previous]]] = previous;
  }
}

// Whether the LMS substrings starting at `a` and `b` (up to and including the next LMS
// position) are equal. The one that reaches the end of the string equals no other.
template <typename Text>
bool equal_lms_substrings(const Text& text, SuffixIndex size, const SuffixTypes& types,
                          SuffixIndex a, SuffixIndex b) {
  for (SuffixIndex offset = 0;; ++offset) {
    if (a + offset == size || b + offset == size) return false;
    if (text[a + offset] != text[b + offset] || types.is_s(a + offset) != types.is_s(b + offset)) {
      return false;
    }
    if (offset > 0 && types.is_lms(a + offset)) return true;  // then b + offset is LMS too
  }
}

template <typename Text>
void sort_suffixes(const Text& text, SuffixIndex size, SuffixIndex alphabet, SuffixIndex* suffixes);

// Sorts the LMS substrings by induction, names them by rank, and sorts the LMS suffixes by
// sorting the suffixes of the string of names (recursively when names repeat). Leaves the sorted
// LMS suffixes in suffixes[0, count) and returns count.
template <typename Text>
SuffixIndex sort_lms_suffixes(const Text& text, SuffixIndex size, const SuffixTypes& types,
                              const std::vector<SuffixIndex>& counts, SuffixIndex* suffixes) {
  std::fill(suffixes, suffixes + size, kEmpty);
  std::vector<SuffixIndex> buckets(counts.size());
  bucket_ends(counts, &buckets);
  for (SuffixIndex index = 1; index < size; ++index) {
    if (types.is_lms(index)) suffixes[--buckets[text[index]]] = index;
  }
  std::vector<SuffixIndex>().swap(buckets);
  induce(text, size, types, counts, suffixes);

  SuffixIndex num_lms = 0;
  for (SuffixIndex rank = 0; rank < size; ++rank) {
    if (types.is_lms(suffixes[rank])) suffixes[num_lms++] = suffixes[rank];
  }
  // LMS positions are at least two apart, so position/2 indexes the upper half without clashes.
  std::fill(suffixes + num_lms, suffixes + size, kEmpty);
  SuffixIndex names = 0;
  for (SuffixIndex rank = 0; rank < num_lms; ++rank) {
    const SuffixIndex position = suffixes[rank];
    if (rank == 0 || !equal_lms_substrings(text, size, types, position, suffixes[rank - 1])) {
      ++names;
    }
    suffixes[num_lms + position / 2] = names - 1;
  }
  SuffixIndex* reduced = suffixes + size - num_lms;
  for (SuffixIndex from = size, to = size; from-- > num_lms;) {
    if (suffixes[from] != kEmpty) suffixes[--to] = suffixes[from];
  }
  if (names < num_lms) {
    sort_suffixes(reduced, num_lms, names, suffixes);
  } else {
    for (SuffixIndex index = 0; index < num_lms; ++index) suffixes[reduced[index]] = index;
  }
  // Back from ranks in the reduced string to positions in the text.
  for (SuffixIndex index = 1, next = 0; index < size; ++index) {
    if (types.is_lms(index)) reduced[next++] = index;
  }
  for (SuffixIndex rank = 0; rank < num_lms; ++rank) suffixes[rank] = reduced[suffixes[rank]];
  return num_lms;
}

template <typename Text>
void sort_suffixes(const Text& text, SuffixIndex size, SuffixIndex alphabet, SuffixIndex* suffixes) {
  if (size == 0) return;
  if (size == 1) {
    suffixes[0] = 0;
    return;
  }
  const SuffixTypes types = classify(text, size);
  std::vector<SuffixIndex> counts(static_cast<std::size_t>(alphabet), 0);
  for (SuffixIndex index = 0; index < size; ++index) ++counts[text[index]];
  const SuffixIndex num_lms = sort_lms_suffixes(text, size, types, counts, suffixes);

  // Sorted LMS suffixes at the ends of their buckets, in order, then induce the rest.
  std::fill(suffixes + num_lms, suffixes + size, kEmpty);
  std::vector<SuffixIndex> buckets(counts.size());
  bucket_ends(counts, &buckets);
  for (SuffixIndex rank = num_lms; rank-- > 0;) {
    const SuffixIndex position = suffixes[rank];
    suffixes[rank] = kEmpty;
    suffixes[--buckets[text[position]]] = position;
  }
  std::vector<SuffixIndex>().swap(buckets);
  induce(text, size, types, counts, suffixes);
}

// Dense ranks of the reversed text's symbols, for vocabularies too sparse to bucket directly.
std::vector<SuffixIndex> dense_reversed_symbols(const std::vector<Token>& text,
                                                SuffixIndex* alphabet) {
  std::vector<Token> values(text);
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  std::vector<SuffixIndex> symbols(text.size());
  for (std::size_t index = 0; index < text.size(); ++index) {
    const Token token = text[text.size() - 1 - index];
    symbols[index] = static_cast<SuffixIndex>(
        std::lower_bound(values.begin(), values.end(), token) - values.begin());
  }
  *alphabet = static_cast<SuffixIndex>(values.size());
  return symbols;
}

}  // namespace

std::vector<SuffixIndex> reversed_suffix_array(const std::vector<Token>& text) {
  if (text.size() > static_cast<std::size_t>(std::numeric_limits<SuffixIndex>::max())) {
    throw InputError("text too long for a suffix array: more than 2^31-1 tokens");
  }
  const auto size = static_cast<SuffixIndex>(text.size());
  std::vector<SuffixIndex> suffixes(text.size());
  Token largest = 0;
  for (const Token token : text) {
    if (token != kSeparator) largest = std::max(largest, token);
  }
  if (largest < kNarrowSeparator) {
    // 16-bit symbols: half the memory traffic of the induced-sorting scans.
    std::vector<std::uint16_t> reversed(text.size());
    for (std::size_t index = 0; index < text.size(); ++index) {
      const Token token = text[text.size() - 1 - index];
      reversed[index] = static_cast<std::uint16_t>(token == kSeparator ? largest + 1 : token);
    }
    sort_suffixes(reversed.data(), size, static_cast<SuffixIndex>(largest) + 2, suffixes.data());
  } else if (largest < kMaxDirectAlphabet) {
    // Symbols 0..largest are tokens, largest+1 the separator.
    const ReversedTokens reversed(text.data(), size, largest + 1);
    sort_suffixes(reversed, size, static_cast<SuffixIndex>(largest) + 2, suffixes.data());
  } else {
    SuffixIndex alphabet = 0;
    const std::vector<SuffixIndex> symbols = dense_reversed_symbols(text, &alphabet);
    sort_suffixes(symbols.data(), size, alphabet, suffixes.data());
  }
  return suffixes;
}

std::vector<SuffixIndex> reversed_suffix_array_by_sorting(const std::vector<Token>& text) {
  const std::vector<Token> reversed(text.rbegin(), text.rend());
  std::vector<SuffixIndex> suffixes(text.size());
  for (std::size_t index = 0; index < text.size(); ++index) {
    suffixes[index] = static_cast<SuffixIndex>(index);
  }
  std::sort(suffixes.begin(), suffixes.end(), [&](SuffixIndex a, SuffixIndex b) {
    return std::lexicographical_compare(reversed.begin() + a, reversed.end(),
                                        reversed.begin() + b, reversed.end());
  });
  return suffixes;
}

CompactLcp::CompactLcp(const std::vector<Token>& text,
                       const std::vector<SuffixIndex>& suffix_array) {
  const std::size_t size = text.size();
  // Phi: for each suffix, the one just before it in sorted order. Overwritten in place by the
  // permuted LCP (by text position), where each value is at least the previous one minus one,
  // which makes the whole pass linear.
  std::vector<SuffixIndex> by_position(size);
  if (size > 0) by_position[static_cast<std::size_t>(suffix_array[0])] = kEmpty;
  for (std::size_t rank = 1; rank < size; ++rank) {
    by_position[static_cast<std::size_t>(suffix_array[rank])] = suffix_array[rank - 1];
  }
  // Suffix `start` of the reversed text at offset k is text[size - 1 - start - k].
  std::size_t common = 0;
  for (std::size_t start = 0; start < size; ++start) {
    const SuffixIndex previous = by_position[start];
    if (previous == kEmpty) {
      by_position[start] = 0;
      common = 0;
      continue;
    }
    const auto other = static_cast<std::size_t>(previous);
    while (start + common < size && other + common < size &&
           text[size - 1 - start - common] == text[size - 1 - other - common]) {
      ++common;
    }
    by_position[start] = static_cast<SuffixIndex>(common);
    if (common > 0) --common;
  }
  small_.resize(size);
  for (std::size_t rank = 0; rank < size; ++rank) {
    const auto value = static_cast<std::uint32_t>(by_position[static_cast<std::size_t>(suffix_array[rank])]);
    if (value >= kOverflow) {
      small_[rank] = kOverflow;
      overflow_.emplace_back(static_cast<std::uint32_t>(rank), value);
    } else {
      small_[rank] = static_cast<std::uint16_t>(value);
    }
  }
}

}  // namespace sam
