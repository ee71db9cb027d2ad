// Unit tests of the core, without Python: every query against a brute-force reference on random
// small inputs, files through a temporary path, and the errors bad files and bad ids must raise.
// Run through ctest (CMake option SAM_BUILD_TESTS); a failing CHECK prints its line and the test
// exits non-zero after running everything.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <csignal>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "automaton_builder.hpp"
#include "batch_drafter.hpp"
#include "sharded_cursor.hpp"
#include "dynamic_automaton.hpp"
#include "static_automaton.hpp"
#include "static_cursor.hpp"
#include "suffix_array.hpp"
#include "suffix_tree_construction.hpp"

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(condition)                                                        \
  do {                                                                          \
    ++g_checks;                                                                 \
    if (!(condition)) {                                                         \
      ++g_failures;                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
    }                                                                           \
  } while (0)

// Runs `statement` and checks that it throws `Error`.
#define CHECK_THROWS(Error, statement)                                               \
  do {                                                                               \
    ++g_checks;                                                                      \
    bool thrown = false;                                                             \
    try {                                                                            \
      statement;                                                                     \
    } catch (const Error&) {                                                         \
      thrown = true;                                                                 \
    } catch (const std::exception& other) {                                          \
      std::fprintf(stderr, "%s:%d: %s threw another error: %s\n", __FILE__, __LINE__, \
                   #statement, other.what());                                        \
    }                                                                                \
    if (!thrown) {                                                                   \
      ++g_failures;                                                                  \
      std::fprintf(stderr, "%s:%d: expected %s from %s\n", __FILE__, __LINE__, #Error, \
                   #statement);                                                      \
    }                                                                                \
  } while (0)

using sam::Token;
using Tokens = std::vector<Token>;
using Documents = std::vector<Tokens>;

// ---- brute-force reference --------------------------------------------------------------------

bool equal_at(const Tokens& text, std::size_t start, const Tokens& pattern) {
  return start + pattern.size() <= text.size() &&
         std::equal(pattern.begin(), pattern.end(), text.begin() + static_cast<std::ptrdiff_t>(start));
}

std::size_t occurrences(const Documents& documents, const Tokens& pattern) {
  std::size_t found = 0;
  for (const Tokens& document : documents) {
    for (std::size_t start = 0; start + pattern.size() <= document.size(); ++start) {
      if (equal_at(document, start, pattern)) ++found;
    }
  }
  return found;
}

std::map<Token, std::size_t> continuations(const Documents& documents, const Tokens& pattern) {
  std::map<Token, std::size_t> found;
  for (const Tokens& document : documents) {
    for (std::size_t start = 0; start + pattern.size() < document.size(); ++start) {
      if (equal_at(document, start, pattern)) ++found[document[start + pattern.size()]];
    }
  }
  return found;
}

Tokens suffix(const Tokens& stream, std::size_t length) {
  return Tokens(stream.end() - static_cast<std::ptrdiff_t>(length), stream.end());
}

std::size_t static_match_length(const Documents& documents, const Tokens& stream) {
  std::size_t best = 0;
  for (std::size_t length = 1; length <= stream.size(); ++length) {
    if (occurrences(documents, suffix(stream, length)) == 0) break;
    best = length;
  }
  return best;
}

// Length of the longest matched suffix with a continuation (what drafts extend); 0 if none.
std::size_t draft_context_length(const Documents& documents, const Tokens& stream,
                                 std::size_t matched) {
  for (std::size_t length = matched; length > 0; --length) {
    if (!continuations(documents, suffix(stream, length)).empty()) return length;
  }
  return 0;
}

std::size_t dynamic_match_length(const Tokens& text, std::vector<std::size_t>* first_end) {
  std::size_t best = 0;
  for (std::size_t length = 1; length < text.size(); ++length) {
    const Tokens tail = suffix(text, length);
    bool found = false;
    for (std::size_t end = length - 1; end + 1 < text.size() && !found; ++end) {
      if (equal_at(text, end + 1 - length, tail)) {
        found = true;
        if (first_end != nullptr) first_end->push_back(end);
      }
    }
    if (!found) break;
    best = length;
  }
  return best;
}

Documents random_documents(std::mt19937& rng, Token alphabet, bool large_ids) {
  std::uniform_int_distribution<int> count(1, 4), size(0, 30);
  std::uniform_int_distribution<Token> token(0, alphabet - 1);
  Documents documents(static_cast<std::size_t>(count(rng)));
  for (Tokens& document : documents) {
    document.resize(static_cast<std::size_t>(size(rng)));
    for (Token& value : document) value = token(rng);
  }
  if (documents[0].empty()) documents[0].push_back(0);
  if (large_ids) {
    for (Tokens& document : documents) {
      for (Token& value : document) value = sam::kMaxToken - value * 977u;
    }
  }
  return documents;
}

std::shared_ptr<const sam::StaticAutomaton> build(const Documents& documents,
                                                  const std::string& fingerprint = "") {
  Tokens tokens;
  std::vector<std::int64_t> ends;
  for (const Tokens& document : documents) {
    tokens.insert(tokens.end(), document.begin(), document.end());
    ends.push_back(static_cast<std::int64_t>(tokens.size()));
  }
  sam::BuildInput input;
  input.tokens = tokens.data();
  input.num_tokens = tokens.size();
  input.document_ends = ends.data();
  input.num_documents = ends.size();
  input.tokenizer_fingerprint = fingerprint;
  input.metadata = "{}";
  return sam::StaticAutomaton::build(input);
}

Documents nonempty(const Documents& documents) {
  Documents result;
  for (const Tokens& document : documents) {
    if (!document.empty()) result.push_back(document);
  }
  return result;
}

// ---- checks of one cursor position ------------------------------------------------------------

void check_cursor_position(const Documents& documents, const Tokens& stream,
                           const sam::StaticCursor& cursor) {
  const std::size_t matched = static_match_length(documents, stream);
  CHECK(cursor.match_length() == matched);
  const std::size_t context_length = draft_context_length(documents, stream, matched);
  const Tokens context = suffix(stream, context_length);

  for (const std::size_t limit : {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{40}}) {
    const Tokens draft = cursor.draft(limit);
    CHECK(draft.size() <= limit);
    if (limit == 0 || context_length == 0) {
      CHECK(draft.empty());
      continue;
    }
    Tokens path = context;
    for (const Token token : draft) {
      const auto options = continuations(documents, path);
      CHECK(options.count(token) == 1);
      if (occurrences(documents, path) > 1 && options.count(token) == 1) {
        std::size_t best = 0;
        for (const auto& option : options) best = std::max(best, option.second);
        CHECK(options.at(token) == best);
      }
      path.push_back(token);
    }
    CHECK(occurrences(documents, path) >= 1);
    if (draft.size() < limit) CHECK(continuations(documents, path).empty());
    // The same chain with its counts: occurrences of each prefix of context + draft.
    const sam::DraftChain chain = cursor.draft_with_counts(limit);
    CHECK(chain.tokens == draft);
    CHECK(chain.counts.size() == draft.size() && chain.state_counts.size() == draft.size());
    path = context;
    for (std::size_t step = 0; step < chain.tokens.size() && step < chain.counts.size(); ++step) {
      CHECK(chain.state_counts[step] == occurrences(documents, path));
      path.push_back(chain.tokens[step]);
      CHECK(chain.counts[step] == occurrences(documents, path));
    }
  }

  const std::size_t max_nodes = 10;
  const sam::DraftTree tree = cursor.draft_tree(max_nodes, max_nodes);
  if (context_length == 0) {
    CHECK(tree.tokens.empty());
    return;
  }
  const double total = static_cast<double>(occurrences(documents, context));
  std::vector<Tokens> paths;
  std::int64_t smallest = INT64_MAX;
  for (std::size_t index = 0; index < tree.tokens.size(); ++index) {
    const std::int32_t parent = tree.parents[index];
    CHECK(parent >= -1 && parent < static_cast<std::int32_t>(index));
    Tokens path = parent >= 0 ? paths[static_cast<std::size_t>(parent)] : Tokens{};
    path.push_back(static_cast<Token>(tree.tokens[index]));
    Tokens whole = context;
    whole.insert(whole.end(), path.begin(), path.end());
    const auto expected = static_cast<std::int64_t>(occurrences(documents, whole));
    CHECK(tree.counts[index] == expected);
    const double parent_count =
        parent >= 0 ? static_cast<double>(tree.counts[static_cast<std::size_t>(parent)]) : total;
    CHECK(tree.parent_counts[index] == static_cast<std::int64_t>(parent_count));
    CHECK(std::abs(tree.probabilities[index] - static_cast<double>(expected) / parent_count) < 1e-12);
    if (parent >= 0) CHECK(tree.counts[index] <= tree.counts[static_cast<std::size_t>(parent)]);
    smallest = std::min(smallest, tree.counts[index]);
    paths.push_back(path);
  }
  CHECK(tree.tokens.size() <= max_nodes);
  // Best-first: nothing left out is more frequent than the least frequent node taken.
  std::vector<Tokens> prefixes = paths;
  prefixes.push_back(Tokens{});
  for (const Tokens& prefix : prefixes) {
    Tokens whole = context;
    whole.insert(whole.end(), prefix.begin(), prefix.end());
    for (const auto& option : continuations(documents, whole)) {
      Tokens child = prefix;
      child.push_back(option.first);
      if (std::find(paths.begin(), paths.end(), child) != paths.end()) continue;
      CHECK(tree.tokens.size() == max_nodes);
      CHECK(static_cast<std::int64_t>(option.second) <= smallest);
    }
  }
}

// ---- tests ------------------------------------------------------------------------------------

// ---- suffix-array construction against the online builder ------------------------------------

// The text a build indexes: each document followed by the separator.
Tokens corpus_text(const Documents& documents) {
  Tokens text;
  for (const Tokens& document : documents) {
    text.insert(text.end(), document.begin(), document.end());
    text.push_back(sam::kSeparator);
  }
  return text;
}

bool same_frozen_arrays(const sam::FrozenArrays& a, const sam::FrozenArrays& b) {
  return a.text == b.text && a.link == b.link && a.count == b.count &&
         a.count_overflow == b.count_overflow && a.clone_length == b.clone_length &&
         a.clone_end == b.clone_end && a.edge_offset == b.edge_offset &&
         a.edge_token == b.edge_token && a.edge_target == b.edge_target;
}

void check_constructions_agree(const Documents& documents) {
  const Tokens text = corpus_text(documents);
  CHECK(sam::reversed_suffix_array(text) == sam::reversed_suffix_array_by_sorting(text));
  bool same = false;
  try {
    same = same_frozen_arrays(sam::build_frozen_arrays(Tokens(text)),
                              sam::build_frozen_arrays_online(Tokens(text)));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "  %s\n", error.what());
  }
  CHECK(same);
  if (!same) {
    std::fprintf(stderr, "  constructions differ on a text of %zu tokens:", text.size());
    for (const Token token : text) std::fprintf(stderr, " %d", static_cast<int>(token));
    std::fprintf(stderr, "\n");
  }
}

Documents random_corpus(std::mt19937& rng, Token alphabet, std::size_t max_documents,
                        std::size_t max_length) {
  std::uniform_int_distribution<std::size_t> count(1, max_documents), size(1, max_length);
  std::uniform_int_distribution<Token> token(0, alphabet - 1);
  Documents documents(count(rng));
  for (Tokens& document : documents) {
    document.resize(size(rng));
    for (Token& value : document) value = token(rng);
  }
  return documents;
}

void test_suffix_array_construction_equals_the_online_build() {
  std::mt19937 rng(2024);
  for (int round = 0; round < 1500; ++round) {
    const Token alphabet = std::vector<Token>{1, 2, 3, 4, 8, 50, 3000}[static_cast<std::size_t>(round % 7)];
    const std::size_t max_documents = round % 3 == 0 ? 40 : 4;
    const std::size_t max_length = round % 5 == 0 ? 200 : 24;
    check_constructions_agree(random_corpus(rng, alphabet, max_documents, max_length));
  }
  // Ids past 16 bits (buckets indexed by id) and near the top of the token range (renumbered
  // densely first): the suffix array's other two symbol maps.
  for (const Token base : {Token{70000}, sam::kMaxToken}) {
    for (int round = 0; round < 100; ++round) {
      Documents documents = random_corpus(rng, 6, 5, 30);
      for (Tokens& document : documents) {
        for (Token& value : document) value = base == sam::kMaxToken ? base - value * 1000003u : base + value * 3u;
      }
      check_constructions_agree(documents);
    }
  }
  // Periodic and repeated texts: deep LCP intervals and long suffix-link paths.
  check_constructions_agree({{7}});
  check_constructions_agree({Tokens(300, 5)});
  check_constructions_agree({Tokens(100, 1), Tokens(100, 1), Tokens(3, 1)});
  Tokens periodic;
  for (int index = 0; index < 240; ++index) periodic.push_back(static_cast<Token>(index % 3 == 0));
  check_constructions_agree({periodic, periodic, {0, 1}});
  // Long repeats: LCP values beyond the 16-bit entries.
  Tokens long_document(70000);
  for (std::size_t index = 0; index < long_document.size(); ++index) {
    long_document[index] = static_cast<Token>(index % 1000 == 0 ? index / 1000 % 7 : 9);
  }
  const Tokens text = corpus_text({long_document, long_document});
  CHECK(same_frozen_arrays(sam::build_frozen_arrays(Tokens(text)),
                           sam::build_frozen_arrays_online(Tokens(text))));
}

void test_lcp_against_direct_comparison() {
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    const Tokens text = corpus_text(random_corpus(rng, static_cast<Token>(1 + round % 4), 3, 40));
    const std::vector<sam::SuffixIndex> suffixes = sam::reversed_suffix_array(text);
    const sam::CompactLcp lcp(text, suffixes);
    sam::CompactLcp::SequentialReader reader(lcp);
    const Tokens reversed(text.rbegin(), text.rend());
    for (std::size_t rank = 1; rank < suffixes.size(); ++rank) {
      const auto a = reversed.begin() + suffixes[rank - 1];
      const auto b = reversed.begin() + suffixes[rank];
      const std::size_t common = static_cast<std::size_t>(
          std::mismatch(a, reversed.end(), b, reversed.end()).first - a);
      CHECK(reader.at(rank) == common);
    }
  }
}

void test_builder_recognises_exactly_the_substrings() {
  std::mt19937 rng(1);
  for (int round = 0; round < 60; ++round) {
    std::uniform_int_distribution<Token> token(0, 1 + round % 3);
    Tokens text(static_cast<std::size_t>(1 + round % 40));
    for (Token& value : text) value = token(rng);
    sam::AutomatonBuilder builder;
    for (const Token value : text) builder.append(value);
    CHECK(builder.text_length() == text.size());
    CHECK(builder.num_states() <= 2 * text.size() + 1);
    // Every pattern up to length 5 is accepted by the transitions iff it is a substring.
    for (std::size_t length = 1; length <= 5; ++length) {
      for (int trial = 0; trial < 30; ++trial) {
        Tokens pattern(length);
        for (Token& value : pattern) value = token(rng);
        sam::StateId state = builder.root();
        for (const Token value : pattern) {
          if (state != sam::kNoState) state = builder.transition(state, value);
        }
        const Documents as_documents{text};
        CHECK((state != sam::kNoState) == (occurrences(as_documents, pattern) > 0));
        if (state != sam::kNoState) {
          // The state's first occurrence ends where the pattern first ends.
          const std::uint32_t end = builder.first_end(state);
          CHECK(end + 1 >= length && equal_at(text, end + 1 - length, pattern));
          CHECK(builder.length(state) >= length);
          CHECK(builder.length(builder.link(state)) < builder.length(state));
        }
      }
    }
    builder.clear();
    CHECK(builder.num_states() == 1 && builder.text_length() == 0);
  }
}

void test_static_cursor_against_brute_force() {
  std::mt19937 rng(2);
  for (int round = 0; round < 120; ++round) {
    const Documents documents = random_documents(rng, 2 + round % 4, round % 5 == 4);
    const Documents reference = nonempty(documents);
    const auto automaton = build(documents);
    std::size_t tokens = 0;
    for (const Tokens& document : reference) tokens += document.size();
    CHECK(automaton->num_tokens() == tokens);
    CHECK(automaton->num_documents() == reference.size());
    // A stream that copies stretches of documents with random tokens in between.
    Tokens stream;
    std::uniform_int_distribution<std::size_t> pick(0, reference.size() - 1);
    for (int part = 0; part < 3; ++part) {
      const Tokens& source = reference[pick(rng)];
      const std::size_t start = std::uniform_int_distribution<std::size_t>(0, source.size() - 1)(rng);
      stream.insert(stream.end(), source.begin() + static_cast<std::ptrdiff_t>(start), source.end());
      stream.push_back(reference[pick(rng)][0]);
    }
    sam::StaticCursor cursor(automaton);
    Tokens prefix;
    for (const Token token : stream) {
      prefix.push_back(token);
      CHECK(cursor.feed_one(token) == static_match_length(reference, prefix));
      check_cursor_position(reference, prefix, cursor);
    }
    sam::StaticCursor whole(automaton);
    CHECK(whole.feed(stream.data(), stream.size()) == cursor.match_length());
    CHECK(whole.draft(40) == cursor.draft(40));
    whole.reset();
    CHECK(whole.match_length() == 0 && whole.draft(4).empty());
  }
}

void test_dynamic_against_brute_force() {
  std::mt19937 rng(3);
  for (int round = 0; round < 150; ++round) {
    std::uniform_int_distribution<Token> token(0, 1 + round % 4);
    Tokens text(static_cast<std::size_t>(round % 50));
    for (Token& value : text) value = token(rng);
    if (round % 3 == 0 && text.size() > 10) text.insert(text.end(), text.begin() + 2, text.begin() + 9);
    sam::DynamicAutomaton automaton;
    Tokens prefix;
    for (const Token value : text) {
      automaton.extend(&value, 1);
      prefix.push_back(value);
      std::vector<std::size_t> first_ends;
      const std::size_t matched = dynamic_match_length(prefix, &first_ends);
      CHECK(automaton.match_length() == matched);
      const Tokens draft = automaton.draft(6);
      if (matched == 0) {
        CHECK(draft.empty());
        continue;
      }
      // The tokens after the first earlier occurrence of the matched suffix.
      const std::size_t end = first_ends[matched - 1];
      const std::size_t stop = std::min(prefix.size(), end + 1 + 6);
      CHECK(draft == Tokens(prefix.begin() + static_cast<std::ptrdiff_t>(end + 1),
                            prefix.begin() + static_cast<std::ptrdiff_t>(stop)));
      CHECK(automaton.draft(0).empty());
    }
    CHECK(automaton.num_tokens() == text.size());
    automaton.reset();
    CHECK(automaton.num_tokens() == 0 && automaton.match_length() == 0);
  }
}

void test_dynamic_single_token_extends_grow_geometrically() {
  // One token per call, as a generation appends them: the text must grow by doubling, so n
  // extends move O(n) bytes in total, not O(n^2) (a copy of the whole text per call).
  sam::DynamicAutomaton automaton;
  std::size_t capacity_changes = 0;
  std::size_t capacity = 0;
  for (Token token = 0; token < 100000; ++token) {
    const Token value = token % 7;
    automaton.extend(&value, 1);
    if (automaton.text_capacity() != capacity) {
      ++capacity_changes;
      capacity = automaton.text_capacity();
    }
  }
  CHECK(automaton.num_tokens() == 100000);
  CHECK(capacity_changes <= 40);
}

void test_tree_scan_budget_bounds_the_work() {
  // Token 0 is followed by 2000 distinct tokens, each followed by 200 more: every node of a
  // tree is a high-degree state.
  Documents documents;
  for (Token first = 1; first <= 2000; ++first) {
    for (Token second = 0; second < 3; ++second) documents.push_back({0, first, 5000 + (first * 7 + second) % 200});
  }
  const auto automaton = build(documents);
  sam::StaticCursor cursor(automaton);
  cursor.feed_one(0);
  const sam::DraftTree full = cursor.draft_tree(2100, 4);
  CHECK(full.transitions_scanned <= sam::kTreeScanBudget);
  CHECK(full.tokens.size() == 2100);
  // A budget that covers the context's 2000 continuations and three more nodes' (3 each): the
  // tree keeps every root child, expands three of them, and stops there.
  const sam::DraftTree bounded = cursor.draft_tree(2100, 4, 2010);
  CHECK(bounded.transitions_scanned <= 2010);
  CHECK(bounded.tokens.size() == 2009);
  CHECK(std::count(bounded.parents.begin(), bounded.parents.end(), -1) == 2000);
  CHECK(cursor.draft_tree(64, 4, 100).tokens.empty());  // cannot even read the context's children
}

void test_sharded_cursor_equals_one_automaton() {
  // Documents split into shards answer exactly as one automaton over all of them.
  std::mt19937 rng(9);
  for (int round = 0; round < 80; ++round) {
    Documents documents = nonempty(random_documents(rng, 2 + round % 3, false));
    const Documents more = nonempty(random_documents(rng, 2 + round % 3, false));
    documents.insert(documents.end(), more.begin(), more.end());
    const auto whole = build(documents);
    std::vector<std::shared_ptr<const sam::StaticAutomaton>> shards;
    std::size_t start = 0;
    while (start < documents.size()) {
      const std::size_t count = std::uniform_int_distribution<std::size_t>(1, 3)(rng);
      const std::size_t stop = std::min(documents.size(), start + count);
      shards.push_back(build(Documents(documents.begin() + static_cast<std::ptrdiff_t>(start),
                                       documents.begin() + static_cast<std::ptrdiff_t>(stop))));
      start = stop;
    }
    sam::StaticCursor single(whole);
    sam::ShardedCursor sharded(shards);
    CHECK(sharded.num_shards() == shards.size());
    Tokens stream;
    for (int part = 0; part < 3; ++part) {
      const Tokens& source = documents[std::uniform_int_distribution<std::size_t>(0, documents.size() - 1)(rng)];
      stream.insert(stream.end(), source.begin() + static_cast<std::ptrdiff_t>(source.size() / 2), source.end());
      stream.push_back(static_cast<Token>(round % 3));
    }
    for (const Token token : stream) {
      CHECK(single.feed_one(token) == sharded.feed_one(token));
      const sam::DraftChain a = single.draft_with_counts(40), b = sharded.draft_with_counts(40);
      CHECK(a.tokens == b.tokens && a.counts == b.counts && a.state_counts == b.state_counts);
      const sam::DraftTree x = single.draft_tree(12, 6), y = sharded.draft_tree(12, 6);
      CHECK(x.tokens == y.tokens && x.parents == y.parents && x.counts == y.counts &&
            x.parent_counts == y.parent_counts);
    }
    sharded.reset();
    CHECK(sharded.match_length() == 0 && sharded.draft(4).empty());
    CHECK(sharded.feed(stream.data(), stream.size()) == single.match_length());
    CHECK(sharded.draft(40) == single.draft(40));
  }
  CHECK_THROWS(sam::InputError, sam::ShardedCursor({}));
}

void test_dynamic_concurrent_extend_and_draft() {
  // Writers grow (and reallocate) the arrays while readers draft: the lock keeps every read on
  // live memory (the sanitizer build reports any use after free).
  sam::DynamicAutomaton automaton;
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int reader = 0; reader < 2; ++reader) {
    readers.emplace_back([&] {
      while (!done.load()) {
        for (const Token token : automaton.draft(32)) {
          if (token > 3) ++bad;
        }
        // Separate calls: a reset may come between them, so only each one's own answer is checked.
        if (automaton.match_length() >= 20000 * 20 * 2) ++bad;
        if (automaton.nbytes() == 0) ++bad;
      }
    });
  }
  std::vector<std::thread> writers;
  for (unsigned seed = 0; seed < 2; ++seed) {
    writers.emplace_back([&automaton, seed] {
      std::mt19937 rng(seed);
      std::uniform_int_distribution<Token> token(0, 3);
      Tokens chunk(20000);
      for (int round = 0; round < 20; ++round) {
        for (Token& value : chunk) value = token(rng);
        automaton.extend(chunk.data(), chunk.size());
        if (round % 7 == 6) automaton.reset();
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  done.store(true);
  for (std::thread& reader : readers) reader.join();
  CHECK(bad.load() == 0);
}

std::string temp_path(const char* name) {
  const char* directory = std::getenv("TMPDIR");
  std::string path = std::string(directory ? directory : "/tmp") + "/sam_core_tests_" +
                     std::to_string(::getpid()) + "_" + name;
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void test_save_load_round_trip() {
  std::mt19937 rng(4);
  const std::string path = temp_path("round_trip.sam");
  for (int round = 0; round < 20; ++round) {
    const Documents documents = random_documents(rng, 3, round % 2 == 1);
    const auto built = build(documents, "fingerprint-" + std::to_string(round));
    built->save(path);
    for (const bool verify : {false, true}) {
      const auto loaded = sam::StaticAutomaton::load(path, verify);
      loaded->verify();
      CHECK(loaded->is_memory_mapped() && !built->is_memory_mapped());
      CHECK(loaded->num_tokens() == built->num_tokens());
      CHECK(loaded->num_states() == built->num_states());
      CHECK(loaded->num_edges() == built->num_edges());
      CHECK(loaded->nbytes() == built->nbytes());
      CHECK(loaded->vocab_bound() == built->vocab_bound());
      CHECK(loaded->format_version() == sam::kFormatVersion);
      CHECK(loaded->tokenizer_fingerprint() == "fingerprint-" + std::to_string(round));
      CHECK(loaded->metadata() == "{}");
      sam::StaticCursor a(built), b(loaded);
      const Documents reference = nonempty(documents);
      for (const Tokens& document : reference) {
        for (const Token token : document) {
          CHECK(a.feed_one(token) == b.feed_one(token));
          CHECK(a.draft(20) == b.draft(20));
          CHECK(a.draft_tree(8, 8).counts == b.draft_tree(8, 8).counts);
        }
      }
    }
  }
  std::remove(path.c_str());
}

// Token 0xFFFE is the largest a 16-bit file holds (0xFFFF is its separator); 0xFFFF needs 32 bits.
void test_token_width_boundary() {
  const std::string path = temp_path("width.sam");
  auto documents_with = [](Token top) {
    Documents documents = {{2, top, 1, top}, {}};
    for (Token index = 0; index < 60; ++index) documents[1].push_back(index % 7 == 0 ? top : index % 5);
    return documents;
  };
  const std::size_t wide_bytes = build(documents_with(1000000))->nbytes();
  for (const Token top : {Token{0xFFFE}, Token{0xFFFF}}) {
    const Documents documents = documents_with(top);
    build(documents)->save(path);
    const auto loaded = sam::StaticAutomaton::load(path, true);
    loaded->verify();
    CHECK((loaded->nbytes() < wide_bytes) == (top == 0xFFFE));
    for (const Tokens& stream : {Tokens{top, 1}, Tokens{2, top}, Tokens{top}, Tokens{1, top, 2}, Tokens{0, top, 1}}) {
      sam::StaticCursor cursor(loaded);
      Tokens fed;
      for (const Token token : stream) {
        cursor.feed_one(token);
        fed.push_back(token);
        check_cursor_position(documents, fed, cursor);
      }
    }
  }
  std::remove(path.c_str());
}

void test_large_counts() {
  // Occurrence counts past 16 bits go to a side table; they must still be exact.
  const Documents documents{Tokens(70000, 5), Tokens{5, 6, 5, 7}};
  const auto built = build(documents);
  const std::string path = temp_path("large_counts.sam");
  built->save(path);
  const auto loaded = sam::StaticAutomaton::load(path, true);
  for (const auto& automaton : {built, loaded}) {
    sam::StaticCursor cursor(automaton);
    cursor.feed_one(5);
    const sam::DraftTree tree = cursor.draft_tree(3, 1);
    CHECK(tree.tokens.size() == 3);
    CHECK(tree.tokens[0] == 5 && tree.counts[0] == 69999);
    CHECK(tree.counts[1] == 1 && tree.counts[2] == 1);
    CHECK(std::abs(tree.probabilities[0] - 69999.0 / 70002.0) < 1e-12);
  }
  std::remove(path.c_str());
}

void test_corrupted_files_throw_format_error() {
  const auto automaton = build({{1, 2, 3, 1, 2, 4, 1, 2}, {}, {3, 3, 2, 1}});
  const std::string good_path = temp_path("good.sam");
  const std::string bad_path = temp_path("bad.sam");
  automaton->save(good_path);
  const std::string good = read_file(good_path);
  CHECK(good.size() == automaton->nbytes());

  // Truncated anywhere, from empty to one byte short.
  for (std::size_t cut = 0; cut < good.size(); cut += (cut < 600 ? 7 : 29)) {
    write_file(bad_path, good.substr(0, cut));
    CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(bad_path, false));
  }
  write_file(bad_path, good.substr(0, good.size() - 1));
  CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(bad_path, false));
  // Trailing bytes.
  write_file(bad_path, good + std::string(8, '\0'));
  CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(bad_path, false));
  // Wrong magic.
  std::string bytes = good;
  bytes[0] = 'X';
  write_file(bad_path, bytes);
  CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(bad_path, false));
  // A flipped bit in the header fields.
  for (std::size_t offset = 8; offset < 200; offset += 3) {
    bytes = good;
    bytes[offset] = static_cast<char>(bytes[offset] ^ 0x10);
    write_file(bad_path, bytes);
    CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(bad_path, false));
  }
  // A flipped bit in the payload: caught by the checksum, on load or by verify().
  for (std::size_t offset = 512; offset < good.size(); offset += 5) {
    bytes = good;
    bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
    write_file(bad_path, bytes);
    CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(bad_path, true));
    CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(bad_path, false)->verify());
  }
  // Not a regular file, and a missing one.
  CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load("/", false));
  CHECK_THROWS(sam::FormatError, sam::StaticAutomaton::load(temp_path("missing.sam"), false));
  std::remove(good_path.c_str());
  std::remove(bad_path.c_str());
}

// Runs `body` in a child process with a time limit; true if it finished (returned or threw
// FormatError) in time, false if it hung or crashed.
template <typename Body>
bool finishes_in_a_child(Body&& body, unsigned seconds) {
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(seconds);
    try {
      body();
    } catch (const sam::FormatError&) {
    }
    std::_Exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void test_corrupted_suffix_link_cannot_loop_forever() {
  // Unverified loads trust the payload; a suffix link that points at its own state must be
  // refused as corrupt, not followed forever.
  const auto automaton = build({{1, 2, 3, 1, 2, 4}, {5, 1, 2}});
  const std::string path = temp_path("cycle.sam");
  automaton->save(path);
  std::string bytes = read_file(path);
  constexpr std::size_t kSectionTable = 104, kLinkSection = 3;
  std::uint64_t link_offset = 0;
  std::memcpy(&link_offset, bytes.data() + kSectionTable + 16 * kLinkSection, sizeof(link_offset));
  const std::uint32_t state = 3;
  std::memcpy(&bytes[link_offset + 4 * state], &state, sizeof(state));
  write_file(path, bytes);
  const auto corrupted = sam::StaticAutomaton::load(path, false);
  CHECK_THROWS(sam::FormatError, corrupted->verify());
  CHECK(finishes_in_a_child(
      [&] {
        sam::StaticCursor cursor(corrupted);
        const Token stream[] = {1, 2, 3, 5, 4};
        for (const Token token : stream) {
          cursor.feed_one(token);
          cursor.draft(8);
          cursor.draft_tree(8, 8);
        }
      },
      5));
  std::remove(path.c_str());
}

void test_bad_tokens_throw_input_error() {
  for (const Token bad : {Token{0x80000000u}, Token{0xFFFFFFFEu}, sam::kSeparator}) {
    CHECK_THROWS(sam::InputError, build({{1, 2, bad}}));
    const auto automaton = build({{1, 2, 3}});
    sam::StaticCursor cursor(automaton);
    cursor.feed_one(1);
    CHECK_THROWS(sam::InputError, cursor.feed_one(bad));
    const Token stream[] = {2, bad};
    CHECK_THROWS(sam::InputError, cursor.feed(stream, 2));
    sam::DynamicAutomaton dynamic;
    const Token text[] = {4, 4, bad};
    CHECK_THROWS(sam::InputError, dynamic.extend(text, 3));
    CHECK(dynamic.num_tokens() == 0);  // checked before anything is appended
  }
  // The largest valid id is fine everywhere.
  const auto automaton = build({{sam::kMaxToken, 0, sam::kMaxToken}});
  CHECK(automaton->vocab_bound() == 0x80000000u);
  sam::StaticCursor cursor(automaton);
  CHECK(cursor.feed_one(sam::kMaxToken) == 1);
  CHECK(cursor.draft(3) == (Tokens{0, sam::kMaxToken}));
}

void test_bad_build_input() {
  CHECK_THROWS(sam::InputError, build({}));
  CHECK_THROWS(sam::InputError, build({{}, {}}));
  const Tokens tokens{1, 2, 3};
  const std::int64_t decreasing[] = {2, 1, 3};
  sam::BuildInput input;
  input.tokens = tokens.data();
  input.num_tokens = tokens.size();
  input.document_ends = decreasing;
  input.num_documents = 3;
  CHECK_THROWS(sam::InputError, sam::StaticAutomaton::build(input));
  const std::int64_t short_ends[] = {2};
  input.document_ends = short_ends;
  input.num_documents = 1;
  CHECK_THROWS(sam::InputError, sam::StaticAutomaton::build(input));
  const std::int64_t long_ends[] = {4};
  input.document_ends = long_ends;
  CHECK_THROWS(sam::InputError, sam::StaticAutomaton::build(input));
}

void test_size_limits_are_checked_before_building() {
  // 1.5G tokens would need more than 2^32 transitions: refused from the document ends alone,
  // before the token array (absent here) is read or anything is allocated for it.
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(20);
    const std::int64_t ends[] = {1'500'000'000};
    sam::BuildInput input;
    input.tokens = nullptr;
    input.num_tokens = 1'500'000'000;
    input.document_ends = ends;
    input.num_documents = 1;
    try {
      sam::StaticAutomaton::build(input);
    } catch (const sam::InputError&) {
      std::_Exit(0);
    } catch (...) {
    }
    std::_Exit(1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(sam::kMaxBuildTextLength * 3 - 4 <= 0xFFFFFFFFull);
}

void test_save_into_a_missing_directory_throws() {
  const auto automaton = build({{1, 2}});
  CHECK_THROWS(sam::InputError, automaton->save("/nonexistent-directory/sub/a.sam"));
}

}  // namespace

// ---- scored drafts -------------------------------------------------------------------------------

std::uint32_t count_occurrences(const Tokens& text, const Tokens& pattern) {
  std::uint32_t found = 0;
  for (std::size_t end = pattern.size(); end <= text.size(); ++end) {
    if (equal_at(text, end - pattern.size(), pattern)) ++found;
  }
  return found;
}

void test_dynamic_counts_against_brute_force() {
  std::mt19937 rng(71);
  for (int round = 0; round < 200; ++round) {
    sam::DynamicAutomaton automaton;
    Tokens text;
    // Small alphabets and long runs: the latter take the recount path (a long suffix-link chain).
    const Token alphabet = round % 3 == 0 ? 1 : 3;
    std::uniform_int_distribution<Token> token(0, alphabet - 1);
    std::uniform_int_distribution<int> piece(1, round % 3 == 0 ? 90 : 12);
    for (int extend = 0; extend < 6; ++extend) {
      Tokens added(static_cast<std::size_t>(piece(rng)));
      for (Token& value : added) value = token(rng);
      automaton.extend(added.data(), added.size());
      text.insert(text.end(), added.begin(), added.end());
      for (int probe = 0; probe < 5; ++probe) {
        Tokens pattern(static_cast<std::size_t>(1 + probe * 2));
        for (Token& value : pattern) value = token(rng);
        CHECK(automaton.occurrences(pattern.data(), pattern.size()) == count_occurrences(text, pattern));
      }
    }
  }
}

// Shape and arithmetic every scored draft must have, whatever the automaton.
void check_scored_invariants(const sam::ScoredDraft& draft, const sam::ScoredDraftOptions& options) {
  CHECK(draft.tokens.size() <= options.max_nodes);
  CHECK(draft.parents.size() == draft.tokens.size());
  double expected = 0.0;
  for (std::size_t index = 0; index < draft.tokens.size(); ++index) {
    const std::int32_t parent = draft.parents[index];
    CHECK(parent >= -1 && parent < static_cast<std::int32_t>(index));
    if (options.chain) CHECK(parent == static_cast<std::int32_t>(index) - 1);
    CHECK(draft.probabilities[index] > 0.0 && draft.probabilities[index] <= 1.0);
    const double above = parent < 0 ? 1.0 : draft.path_probabilities[static_cast<std::size_t>(parent)];
    CHECK(std::abs(draft.path_probabilities[index] - above * draft.probabilities[index]) < 1e-12);
    CHECK(draft.path_probabilities[index] >= options.min_path_probability);
    if (index > 0) CHECK(draft.path_probabilities[index] <= draft.path_probabilities[index - 1]);
    expected += draft.path_probabilities[index];
  }
  CHECK(std::abs(draft.expected_tokens - expected) < 1e-9);
  CHECK(draft.num_orders <= options.max_orders);
}

void test_scored_drafts_invariants_and_shards() {
  std::mt19937 rng(83);
  for (int round = 0; round < 300; ++round) {
    const Documents documents = nonempty(random_documents(rng, 4, false));
    sam::ScoredDraftOptions options;
    options.max_nodes = 1 + static_cast<std::size_t>(round % 12);
    options.max_depth = 1 + static_cast<std::size_t>(round % 5);
    options.min_path_probability = (round % 4) * 0.05;
    options.max_orders = 1 + static_cast<std::size_t>(round % 3) * 3;
    options.trusted_length = (round % 3) * 1.5;
    options.chain = round % 5 == 0;
    const auto whole = build(documents);
    std::vector<std::shared_ptr<const sam::StaticAutomaton>> shards;
    for (std::size_t first = 0; first < documents.size(); first += 2) {
      shards.push_back(build(Documents(documents.begin() + static_cast<std::ptrdiff_t>(first),
                                       documents.begin() + static_cast<std::ptrdiff_t>(
                                                               std::min(first + 2, documents.size())))));
    }
    sam::StaticCursor cursor(whole);
    sam::ShardedCursor sharded(shards);
    sam::DynamicAutomaton dynamic;
    std::uniform_int_distribution<Token> token(0, 3);
    for (int step = 0; step < 12; ++step) {
      const Token next = token(rng);
      cursor.feed_one(next);
      sharded.feed_one(next);
      dynamic.extend(&next, 1);
      const sam::ScoredDraft one = cursor.scored_draft(options);
      const sam::ScoredDraft many = sharded.scored_draft(options);
      check_scored_invariants(one, options);
      check_scored_invariants(many, options);
      check_scored_invariants(dynamic.scored_draft(options), options);
      // Shards answer as one automaton over all their documents.
      CHECK(one.tokens == many.tokens && one.parents == many.parents);
      CHECK(one.match_length == many.match_length && one.num_orders == many.num_orders);
      for (std::size_t index = 0; index < one.tokens.size() && index < many.tokens.size(); ++index) {
        CHECK(std::abs(one.probabilities[index] - many.probabilities[index]) < 1e-12);
      }
    }
  }
}

// The batch drafter: rows matched to requests (rows moving, a follow-up turn beginning anew),
// drafts equal to one cursor's chain over the same text, parked requests finished exactly.
void test_batch_drafter_matches_rows_and_drafts() {
  const Documents documents = {{1, 2, 3, 4, 5, 6, 7, 8}, {9, 10, 11, 12, 13}};
  const auto corpus = build(documents);
  sam::BatchDrafterOptions options;
  options.max_draft = 4;
  options.park_steps = 1;
  sam::BatchDrafter drafter({corpus}, options);
  constexpr std::size_t kWidth = 16;
  std::vector<std::int32_t> table(2 * kWidth, 0);
  const auto set_row = [&](std::size_t row, const std::vector<std::int32_t>& text) {
    std::fill_n(table.begin() + static_cast<std::ptrdiff_t>(row * kWidth), kWidth, 0);
    std::copy(text.begin(), text.end(), table.begin() + static_cast<std::ptrdiff_t>(row * kWidth));
  };
  const auto run = [&](std::size_t rows, std::vector<std::int64_t> lengths, std::vector<std::int64_t> sampled) {
    sam::BatchStepInput input;
    input.tokens32 = table.data();
    input.rows = rows;
    input.stride = kWidth;
    input.lengths = lengths.data();
    input.sampled = sampled.data();
    drafter.step(input);
  };
  set_row(0, {1, 2, 3});
  set_row(1, {9, 10});
  run(2, {3, 2}, {1, 1});
  CHECK(drafter.new_requests()[0] == 1 && drafter.new_requests()[1] == 1);
  CHECK(drafter.draft_lengths()[0] == 4 && drafter.tokens()[0] == 4 && drafter.tokens()[3] == 7);
  CHECK(drafter.sources()[0] == static_cast<std::uint8_t>(sam::DraftSource::kCorpus));
  CHECK(drafter.draft_lengths()[1] == 3 && drafter.tokens()[4] == 11);
  sam::StaticCursor cursor(corpus);
  const Token text[] = {9, 10, 11};
  cursor.feed(text, 3);
  sam::ScoredDraftOptions chain;
  chain.chain = true;
  chain.max_nodes = chain.max_depth = 4;
  chain.min_path_probability = options.min_probability;
  chain.max_orders = options.max_orders;
  chain.trusted_length = options.trusted_length;
  const sam::ScoredDraft expected = cursor.scored_draft(chain);
  drafter.given()[0] = 2;
  // Row 0 leaves; row 1 (now 9 10 11) moves into its place.
  set_row(0, {9, 10, 11});
  run(1, {3}, {1});
  CHECK(drafter.new_requests()[0] == 0 && drafter.requests_begun() == 2);
  CHECK(drafter.draft_lengths()[0] == static_cast<std::int32_t>(expected.tokens.size()));
  for (std::size_t i = 0; i < expected.tokens.size(); ++i) {
    CHECK(drafter.tokens()[i] == static_cast<std::int32_t>(expected.tokens[i]));
  }
  CHECK(drafter.num_parked() == 1);
  // A follow-up turn extending the first request's whole text is a new request.
  set_row(1, {1, 2, 3, 7, 1});
  run(2, {3, 5}, {0, 1});
  CHECK(drafter.new_requests()[1] == 1 && drafter.requests_begun() == 3);
  CHECK(drafter.draft_lengths()[0] == 0);  // did not decode this step
  const std::vector<sam::FinishedResponse> finished = drafter.take_finished();
  CHECK(finished.size() == 1 && finished[0].parked_out && finished[0].tokens == std::vector<Token>{3});
  std::vector<std::int64_t> too_long = {17, 5};
  CHECK_THROWS(sam::InputError, run(2, too_long, {1, 1}));
  table[kWidth + 1] = -1;
  CHECK_THROWS(sam::InputError, run(2, {3, 6}, {0, 1}));
  CHECK(drafter.requests_begun() == 3);
  drafter.release_all();
  CHECK(drafter.num_live() == 0 && drafter.take_finished().size() == 2);
}

void test_batch_drafter_reads_without_drafting_then_drafts_later() {
  // A step read with draft = false leaves every draft empty; draft_rows() then writes exactly the
  // drafts a drafting step would have written, for the rows that decoded.
  const auto corpus = build({{1, 2, 3, 4, 5, 6, 7, 8}, {9, 10, 11, 12, 13}});
  sam::BatchDrafterOptions options;
  options.max_draft = 4;
  sam::BatchDrafter reading({corpus}, options);
  sam::BatchDrafter drafting({corpus}, options);
  constexpr std::size_t kWidth = 8;
  const std::vector<std::int32_t> table = {1, 2, 3, 0, 0, 0, 0, 0, 9, 10, 11, 0, 0, 0, 0, 0,
                                           5, 6, 0, 0, 0, 0, 0, 0};
  const std::vector<std::int64_t> lengths = {3, 3, 2};
  const std::vector<std::int64_t> sampled = {1, 1, 0};  // the last row did not decode
  sam::BatchStepInput input;
  input.tokens32 = table.data();
  input.rows = 3;
  input.stride = kWidth;
  input.lengths = lengths.data();
  input.sampled = sampled.data();
  drafting.step(input);
  input.draft = false;
  reading.step(input);
  for (std::size_t r = 0; r < 3; ++r) CHECK(reading.draft_lengths()[r] == 0);
  CHECK(drafting.draft_lengths()[0] == 4 && drafting.draft_lengths()[1] == 2);
  reading.draft_rows();
  for (std::size_t r = 0; r < 3; ++r) {
    CHECK(reading.draft_lengths()[r] == drafting.draft_lengths()[r]);
    CHECK(reading.sources()[r] == drafting.sources()[r]);
    for (std::size_t i = 0; i < options.max_draft; ++i) {
      CHECK(reading.tokens()[r * options.max_draft + i] == drafting.tokens()[r * options.max_draft + i]);
      CHECK(reading.path_probabilities()[r * options.max_draft + i] ==
            drafting.path_probabilities()[r * options.max_draft + i]);
    }
  }
}

int main() {
  test_builder_recognises_exactly_the_substrings();
  test_suffix_array_construction_equals_the_online_build();
  test_lcp_against_direct_comparison();
  test_static_cursor_against_brute_force();
  test_dynamic_against_brute_force();
  test_dynamic_single_token_extends_grow_geometrically();
  test_dynamic_concurrent_extend_and_draft();
  test_tree_scan_budget_bounds_the_work();
  test_sharded_cursor_equals_one_automaton();
  test_dynamic_counts_against_brute_force();
  test_scored_drafts_invariants_and_shards();
  test_save_load_round_trip();
  test_token_width_boundary();
  test_large_counts();
  test_corrupted_files_throw_format_error();
  test_corrupted_suffix_link_cannot_loop_forever();
  test_bad_tokens_throw_input_error();
  test_bad_build_input();
  test_size_limits_are_checked_before_building();
  test_save_into_a_missing_directory_throws();
  test_batch_drafter_matches_rows_and_drafts();
  test_batch_drafter_reads_without_drafting_then_drafts_later();
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
