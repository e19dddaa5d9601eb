//===- ChatTemplate.h - Jinja chat templates of tokenizer_config --*- C++
//-*-===//
//
// Renders the `chat_template` of a tokenizer_config.json in C++ as
// transformers' apply_chat_template does (Jinja with trim_blocks and
// lstrip_blocks, raise_exception, loop controls), for the constructs the
// DeepSeek, Mixtral and Qwen templates use: text, {{ }} and {% %} with
// whitespace control, comments, if / elif / else, for (tuple targets,
// loop.index / index0 / first / last / length / revindex, else, break,
// continue), set (names and namespace attributes), expressions (literals,
// lists, dicts, attributes, subscripts and slices, calls, filters, tests,
// arithmetic, comparisons, in, and / or / not, ~, conditional
// expressions), string and dict methods (strip, split, startswith,
// replace, get, items, ...), namespace(), range() and the usual filters
// (length, trim, tojson, join, default, first, last, upper, lower, ...). A
// construct outside these is an error when the template is parsed (a tag,
// a filter or a test it does not know), or when it is rendered (a method
// or a function it does not know), with the line; never a wrong prompt.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOK_CHATTEMPLATE_H
#define DS_TOK_CHATTEMPLATE_H

#include "absl/status/statusor.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace ds::tok {

class ChatTemplate {
public:
  /// Parses a template's source; errors name the line.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>>
  parse(std::string_view source);
  /// The chat template of a tokenizer_config.json (its "chat_template"
  /// string, or the entry named "default" of a list of them).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>>
  fromTokenizerConfig(const nlohmann::ordered_json &config);
  ~ChatTemplate();

  /// Renders with `context`'s keys as variables (messages,
  /// add_generation_prompt, bos_token, eos_token, tools, ...).
  /// raise_exception(message) in the template is an error with it. Ordered
  /// JSON: objects keep their keys' order, as Python dicts do (tojson,
  /// items()).
  absl::StatusOr<std::string>
  render(const nlohmann::ordered_json &context) const;

  struct Node;

private:
  ChatTemplate();
  std::unique_ptr<Node> root;
};

} // namespace ds::tok

#endif // DS_TOK_CHATTEMPLATE_H
