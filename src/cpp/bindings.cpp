// The only file that knows about Python: exposes the core as sam_decoding._core.
// Users import the typed wrappers in sam_decoding/automaton.py, never this module.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "batch_drafter.hpp"
#include "draft_search.hpp"
#include "scored_draft.hpp"
#include "dynamic_automaton.hpp"
#include "sharded_cursor.hpp"
#include "static_automaton.hpp"
#include "static_cursor.hpp"

namespace py = pybind11;

namespace {

// Feeding more tokens than this at once releases the GIL; below it the release costs more
// than the work.
constexpr std::size_t kReleaseGilTokens = 4096;

// Token ids as a contiguous uint32 view: zero-copy for uint32 and (non-negative) int32 input,
// a checked copy for any other integer dtype. Raises TypeError/ValueError on bad input.
class TokenView {
 public:
  explicit TokenView(const py::array& array) {
    if (array.ndim() != 1) {
      throw py::value_error("token ids must be a 1-D sequence, got an array with " +
                            std::to_string(array.ndim()) + " dimensions");
    }
    const py::dtype dtype = array.dtype();
    const char kind = dtype.kind();
    if (kind != 'i' && kind != 'u') {
      throw py::type_error("token ids must be integers, got dtype " +
                           std::string(py::str(dtype)));
    }
    const auto size = static_cast<std::size_t>(array.shape(0));
    const bool contiguous = (array.flags() & py::array::c_style) != 0;
    // Zero-copy only when the bytes already are native uint32 values; anything else (other
    // widths, strided views, big-endian data) goes through a converting, checked copy.
    const char byte_order = dtype.byteorder();
    const std::uint16_t probe = 1;
    const bool little_endian_host = *reinterpret_cast<const std::uint8_t*>(&probe) == 1;
    const bool native_order = byte_order == '=' || byte_order == '|' ||
                              (byte_order == '<') == little_endian_host;
    if (contiguous && native_order && dtype.itemsize() == 4) {
      data_ = static_cast<const sam::Token*>(array.data());
      size_ = size;
      check_range(data_, size_);
      keep_alive_ = array;
      return;
    }
    copy_.resize(size);
    // uint64 values above 2^63 wrap negative in this cast and are refused below.
    const py::array_t<std::int64_t, py::array::forcecast> as_int64(array);
    auto values = as_int64.unchecked<1>();
    for (std::size_t index = 0; index < size; ++index) {
      const std::int64_t value = values(static_cast<py::ssize_t>(index));
      if (value < 0 || value > sam::kMaxToken) throw_out_of_range(value);
      copy_[index] = static_cast<sam::Token>(value);
    }
    data_ = copy_.data();
    size_ = size;
  }
  const sam::Token* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  static void check_range(const sam::Token* tokens, std::size_t size) {
    // int32 negatives and uint32 values >= 2^31 both have the top bit set.
    for (std::size_t index = 0; index < size; ++index) {
      if (tokens[index] > sam::kMaxToken) {
        throw py::value_error("token ids must be in [0, 2^31-1], got one with bits 0x" +
                              to_hex(tokens[index]));
      }
    }
  }
  static std::string to_hex(std::uint32_t value) {
    char buffer[16];
    std::snprintf(buffer, sizeof(buffer), "%08x", value);
    return buffer;
  }
  [[noreturn]] static void throw_out_of_range(std::int64_t value) {
    throw py::value_error("token ids must be in [0, 2^31-1], got " + std::to_string(value));
  }

  const sam::Token* data_ = nullptr;
  std::size_t size_ = 0;
  std::vector<sam::Token> copy_;
  py::object keep_alive_;
};

template <typename T>
py::array_t<std::int32_t> to_int32_array(const std::vector<T>& values) {
  py::array_t<std::int32_t> result(static_cast<py::ssize_t>(values.size()));
  if (!values.empty()) std::memcpy(result.mutable_data(), values.data(), values.size() * 4);
  return result;
}

template <typename T>
py::array_t<T> to_array(const std::vector<T>& values) {
  py::array_t<T> result(static_cast<py::ssize_t>(values.size()));
  if (!values.empty()) {
    std::memcpy(result.mutable_data(), values.data(), values.size() * sizeof(T));
  }
  return result;
}

py::array_t<std::int64_t> to_int64_array(const std::vector<std::uint64_t>& values) {
  py::array_t<std::int64_t> result(static_cast<py::ssize_t>(values.size()));
  std::int64_t* out = result.mutable_data();
  for (std::size_t index = 0; index < values.size(); ++index) {
    out[index] = static_cast<std::int64_t>(values[index]);
  }
  return result;
}

// Options of a scored draft, checked where they enter.
sam::ScoredDraftOptions scored_options(std::size_t max_nodes, std::size_t max_depth,
                                       double min_probability, bool chain, std::size_t max_orders,
                                       std::uint64_t enough_occurrences, double trusted_length) {
  if (!(min_probability >= 0.0 && min_probability <= 1.0)) {
    throw py::value_error("min_probability must be in [0, 1]");
  }
  if (max_orders == 0) throw py::value_error("max_orders must be >= 1");
  if (!(trusted_length >= 0.0)) throw py::value_error("trusted_length must be >= 0");
  sam::ScoredDraftOptions options;
  options.max_nodes = max_nodes;
  options.max_depth = max_depth;
  options.min_path_probability = min_probability;
  options.chain = chain;
  options.max_orders = max_orders;
  options.enough_occurrences = enough_occurrences;
  options.trusted_length = trusted_length;
  return options;
}

py::tuple scored_tuple(const sam::ScoredDraft& draft) {
  return py::make_tuple(to_array(draft.tokens), to_array(draft.parents), to_array(draft.probabilities),
                        to_array(draft.path_probabilities), draft.match_length, draft.num_orders,
                        draft.expected_tokens, draft.transitions_scanned);
}

// Calls draft(options) without the GIL and returns scored_tuple's fields.
template <typename Drafting>
py::tuple scored(const Drafting& draft, std::size_t max_nodes, std::size_t max_depth,
                 double min_probability, bool chain, std::size_t max_orders,
                 std::uint64_t enough_occurrences, double trusted_length) {
  const sam::ScoredDraftOptions options = scored_options(
      max_nodes, max_depth, min_probability, chain, max_orders, enough_occurrences, trusted_length);
  sam::ScoredDraft result;
  {
    py::gil_scoped_release release;
    result = draft(options);
  }
  return scored_tuple(result);
}

struct StaticHandle {
  std::shared_ptr<const sam::StaticAutomaton> automaton;
};

// One value per row as int64: int32 or int64 input, 1-D, `rows` long.
std::vector<std::int64_t> row_values(const py::array& array, std::size_t rows, const char* name) {
  if (array.ndim() != 1) {
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(array.ndim()) +
                          " dimensions");
  }
  const py::dtype dtype = array.dtype();
  if (dtype.kind() != 'i' || (dtype.itemsize() != 4 && dtype.itemsize() != 8)) {
    throw py::type_error(std::string(name) + " must be int32 or int64, got dtype " +
                         std::string(py::str(dtype)));
  }
  if (static_cast<std::size_t>(array.shape(0)) != rows) {
    throw py::value_error(std::string(name) + " has " + std::to_string(array.shape(0)) +
                          " entries for " + std::to_string(rows) + " rows");
  }
  const py::array_t<std::int64_t, py::array::forcecast> values(array);
  auto view = values.unchecked<1>();
  std::vector<std::int64_t> result(rows);
  for (std::size_t row = 0; row < rows; ++row) result[row] = view(static_cast<py::ssize_t>(row));
  return result;
}

std::vector<std::shared_ptr<const sam::StaticAutomaton>> automata_of(const std::vector<StaticHandle>& handles) {
  std::vector<std::shared_ptr<const sam::StaticAutomaton>> automata;
  automata.reserve(handles.size());
  for (const StaticHandle& handle : handles) automata.push_back(handle.automaton);
  return automata;
}

// A view of `size` (x `width`) values owned by the drafter, kept alive by `owner`.
template <typename T>
py::array buffer_view(T* data, std::size_t size, std::size_t width, const py::handle& owner) {
  if (width == 0) return py::array_t<T>({static_cast<py::ssize_t>(size)}, data, owner);
  return py::array_t<T>({static_cast<py::ssize_t>(size), static_cast<py::ssize_t>(width)}, data, owner);
}

void bind_batch_drafter(py::module_& module) {
  py::class_<sam::BatchDrafter>(module, "BatchDrafter")
      .def(py::init([](const std::vector<StaticHandle>& corpus, std::size_t max_draft, double min_probability,
                       double trusted_length, std::size_t max_orders, std::uint64_t enough_occurrences,
                       std::size_t max_model_len, std::uint32_t park_steps) {
             sam::BatchDrafterOptions options;
             options.max_draft = max_draft;
             options.min_probability = min_probability;
             options.trusted_length = trusted_length;
             options.max_orders = max_orders;
             options.enough_occurrences = enough_occurrences;
             options.max_model_len = max_model_len;
             options.park_steps = park_steps;
             return std::make_unique<sam::BatchDrafter>(automata_of(corpus), options);
           }),
           py::arg("corpus"), py::arg("max_draft"), py::arg("min_probability"), py::arg("trusted_length"),
           py::arg("max_orders"), py::arg("enough_occurrences"), py::arg("max_model_len"),
           py::arg("park_steps"))
      .def(
          "step",
          [](sam::BatchDrafter& self, const py::array& token_ids, const py::array& lengths,
             const py::array& sampled, bool draft) {
            if (token_ids.ndim() != 2) {
              throw py::value_error("token_ids must be 2-D (rows x width), got " +
                                    std::to_string(token_ids.ndim()) + " dimensions");
            }
            const py::dtype dtype = token_ids.dtype();
            const char order = dtype.byteorder();
            const std::uint16_t probe = 1;
            const bool little_endian_host = *reinterpret_cast<const std::uint8_t*>(&probe) == 1;
            const bool native_order = order == '=' || order == '|' || (order == '<') == little_endian_host;
            if (dtype.kind() != 'i' || (dtype.itemsize() != 4 && dtype.itemsize() != 8) || !native_order) {
              throw py::type_error("token_ids must be native int32 or int64, got dtype " +
                                   std::string(py::str(dtype)));
            }
            if ((token_ids.flags() & py::array::c_style) == 0) {
              throw py::value_error("token_ids must be C-contiguous");
            }
            sam::BatchStepInput input;
            input.rows = static_cast<std::size_t>(token_ids.shape(0));
            input.stride = static_cast<std::size_t>(token_ids.shape(1));
            const std::vector<std::int64_t> row_lengths = row_values(lengths, input.rows, "lengths");
            const std::vector<std::int64_t> row_sampled = row_values(sampled, input.rows, "sampled");
            input.lengths = row_lengths.data();
            input.sampled = row_sampled.data();
            input.draft = draft;
            if (dtype.itemsize() == 4) {
              input.tokens32 = static_cast<const std::int32_t*>(token_ids.data());
            } else {
              input.tokens64 = static_cast<const std::int64_t*>(token_ids.data());
            }
            py::gil_scoped_release release;
            self.step(input);
          },
          py::arg("token_ids"), py::arg("lengths"), py::arg("sampled"), py::arg("draft") = true)
      .def("draft_rows", &sam::BatchDrafter::draft_rows, py::call_guard<py::gil_scoped_release>())
      .def(
          "buffers",
          [](py::object self_object) {
            auto& self = self_object.cast<sam::BatchDrafter&>();
            const std::size_t rows = self.capacity();
            const std::size_t k = self.options().max_draft;
            py::dict views;
            views["tokens"] = buffer_view(self.tokens(), rows, k, self_object);
            views["probabilities"] = buffer_view(self.probabilities(), rows, k, self_object);
            views["path_probabilities"] = buffer_view(self.path_probabilities(), rows, k, self_object);
            views["draft_lengths"] = buffer_view(self.draft_lengths(), rows, 0, self_object);
            views["sources"] = buffer_view(self.sources(), rows, 0, self_object);
            views["match_lengths"] = buffer_view(self.match_lengths(), rows, 0, self_object);
            views["new_requests"] = buffer_view(self.new_requests(), rows, 0, self_object);
            views["previous_given"] = buffer_view(self.previous_given(), rows, 0, self_object);
            views["previous_accepted"] = buffer_view(self.previous_accepted(), rows, 0, self_object);
            views["previous_probabilities"] = buffer_view(self.previous_probabilities(), rows, k, self_object);
            views["previous_sources"] = buffer_view(self.previous_sources(), rows, 0, self_object);
            views["given"] = buffer_view(self.given(), rows, 0, self_object);
            return views;
          })
      .def("set_source_corrections", &sam::BatchDrafter::set_source_corrections, py::arg("text"), py::arg("corpus"),
           py::arg("responses"))
      .def(
          "set_response_segments",
          [](sam::BatchDrafter& self, const std::vector<StaticHandle>& segments) {
            auto automata = automata_of(segments);
            py::gil_scoped_release release;
            self.set_response_segments(std::move(automata));
          },
          py::arg("segments"))
      .def("take_finished",
           [](sam::BatchDrafter& self) {
             std::vector<sam::FinishedResponse> finished;
             {
               py::gil_scoped_release release;
               finished = self.take_finished();
             }
             py::list result;
             for (const sam::FinishedResponse& response : finished) {
               py::array_t<std::int32_t> tokens(static_cast<py::ssize_t>(response.tokens.size()));
               if (!response.tokens.empty()) {
                 std::memcpy(tokens.mutable_data(), response.tokens.data(), response.tokens.size() * 4);
               }
               result.append(py::make_tuple(tokens, response.parked_out));
             }
             return result;
           })
      .def("release_all",
           [](sam::BatchDrafter& self) {
             py::gil_scoped_release release;
             self.release_all();
           })
      .def_property_readonly("rows", &sam::BatchDrafter::rows)
      .def_property_readonly("capacity", &sam::BatchDrafter::capacity)
      .def_property_readonly("buffer_generation", &sam::BatchDrafter::buffer_generation)
      .def_property_readonly("max_draft", [](const sam::BatchDrafter& self) { return self.options().max_draft; })
      .def_property_readonly("num_live", &sam::BatchDrafter::num_live)
      .def_property_readonly("num_parked", &sam::BatchDrafter::num_parked)
      .def_property_readonly("requests_begun", &sam::BatchDrafter::requests_begun);
}

// The same Python face for a cursor over one automaton and over a set of shards.
template <typename Cursor>
void bind_cursor(py::class_<Cursor>& cursor) {
  cursor
      .def(
          "feed",
          [](Cursor& self, const py::array& tokens) {
            const TokenView view(tokens);
            if (view.size() >= kReleaseGilTokens) {
              py::gil_scoped_release release;
              return self.feed(view.data(), view.size());
            }
            return self.feed(view.data(), view.size());
          },
          py::arg("tokens"))
      .def(
          "feed_one",
          [](Cursor& self, std::int64_t token) {
            if (token < 0 || token > sam::kMaxToken) {
              throw py::value_error("token ids must be in [0, 2^31-1], got " +
                                    std::to_string(token));
            }
            return self.feed_one(static_cast<sam::Token>(token));
          },
          py::arg("token"))
      .def_property_readonly("match_length", &Cursor::match_length)
      .def(
          "draft",
          [](const Cursor& self, std::size_t max_tokens) {
            return to_int32_array(self.draft(max_tokens));
          },
          py::arg("max_tokens"))
      .def(
          "draft_with_counts",
          [](const Cursor& self, std::size_t max_tokens) {
            const sam::DraftChain chain = self.draft_with_counts(max_tokens);
            return py::make_tuple(to_int32_array(chain.tokens), to_int64_array(chain.counts),
                                  to_int64_array(chain.state_counts));
          },
          py::arg("max_tokens"))
      .def(
          "draft_tree",
          [](const Cursor& self, std::size_t max_nodes, std::size_t max_depth) {
            sam::DraftTree tree;
            {
              py::gil_scoped_release release;
              tree = self.draft_tree(max_nodes, max_depth);
            }
            return py::make_tuple(to_array(tree.tokens), to_array(tree.parents),
                                  to_array(tree.probabilities), to_array(tree.counts));
          },
          py::arg("max_nodes"), py::arg("max_depth"))
      .def(
          "scored_draft",
          [](const Cursor& self, std::size_t max_nodes, std::size_t max_depth, double min_probability,
             bool chain, std::size_t max_orders, std::uint64_t enough_occurrences, double trusted_length) {
            return scored([&](const sam::ScoredDraftOptions& options) { return self.scored_draft(options); },
                          max_nodes, max_depth, min_probability, chain, max_orders, enough_occurrences,
                          trusted_length);
          },
          py::arg("max_nodes"), py::arg("max_depth"), py::arg("min_probability"), py::arg("chain"),
          py::arg("max_orders"), py::arg("enough_occurrences"), py::arg("trusted_length"))
      .def("copy", [](const Cursor& self) { return Cursor(self); })
      .def("reset", &Cursor::reset);
}

}  // namespace

PYBIND11_MODULE(_core, module) {
  module.doc() = "Native suffix automata for sam-decoding (use the sam_decoding package instead)";
#define SAM_STRINGIFY(x) #x
#define SAM_TO_STRING(x) SAM_STRINGIFY(x)
  module.attr("__version__") = SAM_TO_STRING(SAM_VERSION_INFO);
  module.attr("FORMAT_VERSION") = sam::kFormatVersion;
  module.attr("MAX_TOKEN") = sam::kMaxToken;
  module.attr("MAX_BUILD_TEXT_LENGTH") = sam::kMaxBuildTextLength;

  static py::exception<sam::FormatError> format_error(module, "FormatError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const sam::FormatError& exception) {
      py::set_error(format_error, exception.what());
    }
  });

  py::class_<StaticHandle>(module, "StaticAutomaton")
      .def_static(
          "build",
          [](const py::array& tokens, const py::array_t<std::int64_t, py::array::c_style>& ends,
             const std::string& fingerprint, const std::string& metadata,
             const std::string& construction) {
            const TokenView view(tokens);
            if (construction != "suffix_array" && construction != "online") {
              throw py::value_error("construction must be 'suffix_array' or 'online', got '" +
                                    construction + "'");
            }
            if (ends.ndim() != 1) throw py::value_error("document ends must be 1-D");
            sam::BuildInput input;
            input.tokens = view.data();
            input.num_tokens = view.size();
            input.document_ends = ends.data();
            input.num_documents = static_cast<std::size_t>(ends.shape(0));
            input.tokenizer_fingerprint = fingerprint;
            input.metadata = metadata;
            input.construction = construction == "online" ? sam::Construction::kOnline
                                                          : sam::Construction::kSuffixArray;
            StaticHandle handle;
            {
              py::gil_scoped_release release;
              handle.automaton = sam::StaticAutomaton::build(input);
            }
            return handle;
          },
          py::arg("tokens"), py::arg("document_ends"), py::arg("tokenizer_fingerprint"),
          py::arg("metadata"), py::arg("construction") = "suffix_array")
      .def_static(
          "load",
          [](const std::string& path, bool verify) {
            StaticHandle handle;
            py::gil_scoped_release release;
            handle.automaton = sam::StaticAutomaton::load(path, verify);
            return handle;
          },
          py::arg("path"), py::arg("verify"))
      .def(
          "save",
          [](const StaticHandle& self, const std::string& path) {
            py::gil_scoped_release release;
            self.automaton->save(path);
          },
          py::arg("path"))
      .def("verify",
           [](const StaticHandle& self) {
             py::gil_scoped_release release;
             self.automaton->verify();
           })
      .def_property_readonly("num_tokens",
                             [](const StaticHandle& self) { return self.automaton->num_tokens(); })
      .def_property_readonly(
          "num_documents", [](const StaticHandle& self) { return self.automaton->num_documents(); })
      .def_property_readonly("num_states",
                             [](const StaticHandle& self) { return self.automaton->num_states(); })
      .def_property_readonly("num_edges",
                             [](const StaticHandle& self) { return self.automaton->num_edges(); })
      .def_property_readonly("format_version",
                             [](const StaticHandle& self) { return self.automaton->format_version(); })
      .def_property_readonly("vocab_bound",
                             [](const StaticHandle& self) { return self.automaton->vocab_bound(); })
      .def_property_readonly("nbytes",
                             [](const StaticHandle& self) { return self.automaton->nbytes(); })
      .def_property_readonly(
          "is_memory_mapped",
          [](const StaticHandle& self) { return self.automaton->is_memory_mapped(); })
      .def_property_readonly(
          "tokenizer_fingerprint",
          [](const StaticHandle& self) { return py::bytes(self.automaton->tokenizer_fingerprint()); })
      .def_property_readonly(
          "metadata", [](const StaticHandle& self) { return py::bytes(self.automaton->metadata()); })
      .def("cursor", [](const StaticHandle& self) { return sam::StaticCursor(self.automaton); });

  py::class_<sam::StaticCursor> static_cursor(module, "StaticCursor");
  bind_cursor(static_cursor);

  py::class_<sam::ShardedCursor> sharded_cursor(module, "ShardedCursor");
  sharded_cursor
      .def(py::init([](const std::vector<StaticHandle>& shards) {
             std::vector<std::shared_ptr<const sam::StaticAutomaton>> automata;
             automata.reserve(shards.size());
             for (const StaticHandle& shard : shards) automata.push_back(shard.automaton);
             return sam::ShardedCursor(automata);
           }),
           py::arg("shards"))
      .def_property_readonly("num_shards", &sam::ShardedCursor::num_shards);
  bind_cursor(sharded_cursor);

  py::class_<sam::DynamicAutomaton>(module, "DynamicAutomaton")
      .def(py::init<>())
      .def(
          "extend",
          [](sam::DynamicAutomaton& self, const py::array& tokens) {
            const TokenView view(tokens);
            if (view.size() >= kReleaseGilTokens) {
              py::gil_scoped_release release;
              self.extend(view.data(), view.size());
            } else {
              self.extend(view.data(), view.size());
            }
          },
          py::arg("tokens"))
      .def(
          "extend_one",
          [](sam::DynamicAutomaton& self, std::int64_t token) {
            if (token < 0 || token > sam::kMaxToken) {
              throw py::value_error("token ids must be in [0, 2^31-1], got " +
                                    std::to_string(token));
            }
            const auto value = static_cast<sam::Token>(token);
            self.extend(&value, 1);
          },
          py::arg("token"))
      .def_property_readonly("match_length", &sam::DynamicAutomaton::match_length)
      .def(
          "draft",
          [](const sam::DynamicAutomaton& self, std::size_t max_tokens) {
            return to_int32_array(self.draft(max_tokens));
          },
          py::arg("max_tokens"))
      .def(
          "scored_draft",
          [](const sam::DynamicAutomaton& self, std::size_t max_nodes, std::size_t max_depth,
             double min_probability, bool chain, std::size_t max_orders, std::uint64_t enough_occurrences, double trusted_length) {
            return scored([&](const sam::ScoredDraftOptions& options) { return self.scored_draft(options); },
                          max_nodes, max_depth, min_probability, chain, max_orders, enough_occurrences,
                          trusted_length);
          },
          py::arg("max_nodes"), py::arg("max_depth"), py::arg("min_probability"), py::arg("chain"),
          py::arg("max_orders"), py::arg("enough_occurrences"), py::arg("trusted_length"))
      .def(
          "occurrences",
          [](const sam::DynamicAutomaton& self, const py::array& tokens) {
            const TokenView view(tokens);
            return self.occurrences(view.data(), view.size());
          },
          py::arg("tokens"))
      .def("reset", &sam::DynamicAutomaton::reset)
      .def_property_readonly("num_tokens", &sam::DynamicAutomaton::num_tokens)
      .def_property_readonly("num_states", &sam::DynamicAutomaton::num_states)
      .def_property_readonly("nbytes", &sam::DynamicAutomaton::nbytes);

  bind_batch_drafter(module);
}
