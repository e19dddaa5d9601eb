//===- ChatTemplateTest.cpp - chat templates: rules, refusals, errors -----===//
//
// Exactness against transformers' apply_chat_template on generated
// conversations is test/lit/tokenizer/chat-templates.test; here: Jinja's
// whitespace rules, Python's semantics where templates see them, and the
// errors for what is not supported.
//
//===----------------------------------------------------------------------===//

#include "ds/tok/ChatTemplate.h"

#include <gtest/gtest.h>

#include <string>

using namespace ds::tok;
using json = nlohmann::ordered_json;

namespace {

std::string render(const std::string &source, const json &context = {}) {
  auto t = ChatTemplate::parse(source);
  if (!t.ok())
    return "parse error: " + std::string(t.status().message());
  auto out = (*t)->render(context.is_null() ? json::object() : context);
  if (!out.ok())
    return "render error: " + std::string(out.status().message());
  return *out;
}

TEST(ChatTemplate, WhitespaceRulesAreJinjas) {
  // trim_blocks drops the newline after a block tag, lstrip_blocks the
  // indentation before one; '-' strips all whitespace on its side; one
  // trailing newline of the template is dropped.
  EXPECT_EQ(render("{% if true %}\n  a\n  {% endif %}\nb\n"), "  a\nb");
  EXPECT_EQ(render("x  {%- if true -%}  y  {%- endif %}"), "xy");
  EXPECT_EQ(render("{# c #}\n{{ 'v' }}  {# c #} w"), "v   w");
  EXPECT_EQ(render("a {% if true %}b{% endif %} c"), "a b c");
}

TEST(ChatTemplate, PythonSemantics) {
  const json ctx = {{"m", {{"k", "v"}, {"n", 3}}}, {"xs", {1, 2, 3}}};
  EXPECT_EQ(render("{{ m.k }}{{ m['n'] + 1 }}{{ m.missing }}|{{ m.missing is "
                   "defined }}",
                   ctx),
            "v4|False");
  EXPECT_EQ(render("{{ xs[-1] }}{{ xs[::-1] }}{{ 'héllo'[1:3] }}{{ 7 // 2 }}"
                   "{{ -7 % 3 }}{{ 1 / 2 }}",
                   ctx),
            "3[3, 2, 1]él320.5");
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }}{{ ' x '.strip() }}"
                   "{{ 'a</t>b'.split('</t>')[-1] }}"),
            "['a', 'b', '', 'c']xb");
  EXPECT_EQ(render("{{ {'b': 1, 'a': [true, none, 1.5]} | tojson }}"),
            "{\"b\": 1, \"a\": [true, null, 1.5]}");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n "
                   "= ns.n + x %}{% set local = 1 %}{% endfor %}{{ ns.n }}"
                   "{{ local is defined }}",
                   ctx),
            "6False");
  EXPECT_EQ(render("{% for x in xs if x > 1 %}{{ loop.index }}{{ x }}"
                   "{% if loop.last %}!{% endif %}{% endfor %}",
                   ctx),
            "1223!");
  EXPECT_EQ(render("{% for x in xs %}{% if x == 2 %}{% break %}{% endif %}"
                   "{{ x }}{% else %}empty{% endfor %}",
                   ctx),
            "1");
  EXPECT_EQ(
      render("{{ 'yes' if xs else 'no' }}{{ none or 'd' }}{{ 0 and 1 }}", ctx),
      "yesd0");
}

TEST(ChatTemplate, PrecedenceIsJinjas) {
  // A sign binds tighter than filters; ~ between + and *; tests at the
  // filters' level; CRLF read as LF.
  EXPECT_EQ(render("{{ -3 | abs }} {{ 'a' ~ 2 * 3 }} {{ 1 + 1 is odd }}"),
            "3 a6 2");
  EXPECT_EQ(render("{% if true %}\r\na\r\n{% endif %}\r\n"), "a\n");
  EXPECT_EQ(render("{{ '<a href=\"x\">&\\'' | e }}"),
            "&lt;a href=&#34;x&#34;&gt;&amp;&#39;");
}

TEST(ChatTemplate, CaseMappingsAreUnicode) {
  EXPECT_EQ(render("{{ 'strasse é' | upper }} {{ 'éCOLE-x' | title }} "
                   "{{ 'hello wORLD'.title() }} {{ 'ñu' | capitalize }} "
                   "{{ ['a'][5] is defined }}"),
            "STRASSE É École-X Hello World Ñu False");
}

TEST(ChatTemplate, HostileInputIsAnErrorNotACrash) {
  EXPECT_EQ(render("{{ 4 is divisibleby 0 }}"),
            "render error: chat template line 1: divisibleby 0");
  EXPECT_EQ(render("{{ (-9223372036854775807 - 1) % -1 }}"), "0");
  EXPECT_EQ(render("{{ 'abc'[1::9223372036854775807] }}"), "b");
  EXPECT_EQ(render("{{ range(1000000) | length }}"),
            "render error: chat template line 1: range() of more than "
            "100000 items");
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i)
    chain += " + 1";
  EXPECT_EQ(render(chain + " }}"),
            "parse error: chat template line 1: expression too long");
}

TEST(ChatTemplate, RefusesWhatItDoesNotSupportWithTheLine) {
  EXPECT_EQ(render("a\n{% macro f() %}{% endmacro %}"),
            "parse error: chat template line 2: unsupported tag '{% macro "
            "%}'");
  EXPECT_EQ(render("{{ x | tojson(separators=1) }}"),
            "parse error: chat template line 1: filter 'tojson' has no "
            "argument 'separators'");
  EXPECT_EQ(
      render("{{ {'b': {'d': 1, 'c': 2}, 'a': 0} | tojson(sort_keys=true) "
             "}}"),
      "{\"a\": 0, \"b\": {\"c\": 2, \"d\": 1}}");
  EXPECT_EQ(render("{{ x | frobnicate }}"),
            "parse error: chat template line 1: unsupported filter "
            "'frobnicate'");
  EXPECT_EQ(render("{% if x %}"),
            "parse error: chat template line 1: missing '{% endif %}'");
  EXPECT_EQ(render("\n\n{{ 'a'.zfill(3) }}"),
            "render error: chat template line 3: method 'zfill' of 'a' is "
            "not supported");
  EXPECT_EQ(render("{{ raise_exception('roles must alternate') }}"),
            "render error: roles must alternate");
  EXPECT_EQ(
      render("{{ missing + 'x' }}"),
      "render error: chat template line 1: cannot add an undefined value and "
      "'x'");
}

TEST(ChatTemplate, FromTokenizerConfig) {
  auto direct = ChatTemplate::fromTokenizerConfig(
      json{{"chat_template", "{{ bos_token }}hi"}});
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(*(*direct)->render(json{{"bos_token", "<s>"}}), "<s>hi");
  auto listed = ChatTemplate::fromTokenizerConfig(
      json{{"chat_template",
            json::array({json{{"name", "tool_use"}, {"template", "t"}},
                         json{{"name", "default"}, {"template", "d"}}})}});
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*(*listed)->render(json::object()), "d");
  EXPECT_FALSE(ChatTemplate::fromTokenizerConfig(json::object()).ok());
}

} // namespace
