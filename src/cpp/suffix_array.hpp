// Suffix array and LCP array of a token text, for building the static automaton in sequential
// passes (suffix_tree_construction.hpp) instead of online.
//
// The suffix array is built by induced sorting (SA-IS: Nong, Zhang and Chan, "Two efficient
// algorithms for linear time suffix array construction", 2011), linear in the text length for an
// integer alphabet; the LCP array by the permuted-LCP (Phi) method (Kärkkäinen, Manzini and
// Puglisi, CPM 2009), in 16 bits per entry with a side list for the rare long ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "token_types.hpp"

namespace sam {

// Suffix positions; int32 halves the memory of size_t, and texts stay below 2^31 tokens
// (kMaxBuildTextLength).
using SuffixIndex = std::int32_t;

// Suffix array of the reverse of `text` (text[n-1], ..., text[0]), where the end of the string
// sorts before every token: result[rank] = start of the rank-th smallest suffix of the reversed
// text. Any uint32 is a token (the document separator included); alphabet order is by value.
std::vector<SuffixIndex> reversed_suffix_array(const std::vector<Token>& text);

// The reference: the same by comparison sorting, O(n^2 log n) worst case. For tests only.
std::vector<SuffixIndex> reversed_suffix_array_by_sorting(const std::vector<Token>& text);

// LCP array in suffix-array order: at(rank) = length of the longest common prefix of the suffixes
// of ranks rank-1 and rank (0 for rank 0). Read in increasing rank order (next_overflow), which is
// how the suffix-tree sweeps read it.
class CompactLcp {
 public:
  // From the suffix array of the reversed text, as reversed_suffix_array returns it.
  CompactLcp(const std::vector<Token>& text, const std::vector<SuffixIndex>& suffix_array);

  std::size_t size() const { return small_.size(); }
  std::size_t memory_bytes() const {
    return small_.capacity() * sizeof(std::uint16_t) + overflow_.capacity() * sizeof(overflow_[0]);
  }
  // A reader that must be called with ranks 0, 1, 2, ... in order.
  class SequentialReader {
   public:
    explicit SequentialReader(const CompactLcp& lcp) : lcp_(lcp) {}
    std::uint32_t at(std::size_t rank) {
      const std::uint16_t small = lcp_.small_[rank];
      if (small != kOverflow) return small;
      while (lcp_.overflow_[next_].first != rank) ++next_;
      return lcp_.overflow_[next_].second;
    }

   private:
    const CompactLcp& lcp_;
    std::size_t next_ = 0;
  };

 private:
  static constexpr std::uint16_t kOverflow = 0xFFFF;
  std::vector<std::uint16_t> small_;
  // (rank, lcp) of every lcp >= kOverflow, by increasing rank.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> overflow_;
};

}  // namespace sam
