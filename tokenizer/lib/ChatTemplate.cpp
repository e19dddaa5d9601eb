//===- ChatTemplate.cpp - Jinja chat templates in C++ ---------------------===//
//
// A lexer (Jinja's trim_blocks / lstrip_blocks and the '-' whitespace
// controls), a recursive-descent parser into statement and expression
// trees, and an evaluator over JSON values with Python's semantics where
// templates see them (truthiness, str(), `in`, slicing by code point,
// json.dumps for tojson). Hand-written: no maintained C++ Jinja library is
// packaged in Debian, and the subset chat templates use is small.
//
//===----------------------------------------------------------------------===//

#include "ds/tok/ChatTemplate.h"

#include "Unicode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include <utf8proc.h>

#include <charconv>
#include <climits>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <vector>

namespace ds::tok {

using json = nlohmann::ordered_json;

namespace {

//===----------------------------------------------------------------------===//
// Values
//===----------------------------------------------------------------------===//

/// A template value: JSON data, Undefined, or a namespace (shared, so that
/// `set ns.x = ...` changes it wherever it is seen).
struct Value {
  json j;
  bool undefined = false;
  std::shared_ptr<json> ns;

  static Value undef() {
    Value v;
    v.undefined = true;
    return v;
  }
  Value() = default;
  Value(json v) : j(std::move(v)) {}
  const json &data() const { return ns ? *ns : j; }
};

/// A template error: the message carries the line.
struct TemplateError {
  std::string message;
};

[[noreturn]] void fail(int line, const std::string &message) {
  throw TemplateError{absl::StrCat("chat template line ", line, ": ", message)};
}

bool truthy(const Value &v) {
  if (v.undefined)
    return false;
  if (v.ns)
    return true;
  const json &j = v.j;
  switch (j.type()) {
  case json::value_t::null:
    return false;
  case json::value_t::boolean:
    return j.get<bool>();
  case json::value_t::number_integer:
  case json::value_t::number_unsigned:
    return j.get<int64_t>() != 0;
  case json::value_t::number_float:
    return j.get<double>() != 0.0;
  case json::value_t::string:
    return !j.get_ref<const std::string &>().empty();
  case json::value_t::array:
  case json::value_t::object:
    return !j.empty();
  default:
    return false;
  }
}

/// Python's repr of a float (shortest round trip, ".0" for integers,
/// exponents as 1e-05).
std::string pyFloat(double d) {
  if (std::isnan(d))
    return "nan";
  if (std::isinf(d))
    return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, end);
  // to_chars's shortest form: "1e-05" comes as "1e-05"; "100000" may come
  // as "1e+05": Python prints up to 1e16 positionally.
  const size_t e = s.find('e');
  if (e != std::string::npos) {
    int exp = 0;
    const char *x = s.data() + e + 1 + (s[e + 1] == '+' ? 1 : 0);
    std::from_chars(x, s.data() + s.size(), exp);
    if (exp >= -4 && exp < 16) {
      char fixed[64];
      auto [fend, fec] = std::to_chars(fixed, fixed + sizeof fixed, d,
                                       std::chars_format::fixed);
      s.assign(fixed, fend);
    } else {
      // Python: mantissa, 'e', sign, at least two exponent digits.
      std::string mant = s.substr(0, e);
      std::string ex = std::to_string(std::abs(exp));
      if (ex.size() < 2)
        ex = "0" + ex;
      return mant + "e" + (exp < 0 ? "-" : "+") + ex;
    }
  }
  if (s.find_first_of(".e") == std::string::npos)
    s += ".0";
  return s;
}

std::string pyRepr(const json &j);

/// Python's str() of a value.
std::string pyStr(const Value &v) {
  if (v.undefined)
    return "";
  if (v.ns)
    return "<Namespace>";
  const json &j = v.j;
  switch (j.type()) {
  case json::value_t::string:
    return j.get<std::string>();
  case json::value_t::null:
    return "None";
  case json::value_t::boolean:
    return j.get<bool>() ? "True" : "False";
  case json::value_t::number_integer:
    return std::to_string(j.get<int64_t>());
  case json::value_t::number_unsigned:
    return std::to_string(j.get<uint64_t>());
  case json::value_t::number_float:
    return pyFloat(j.get<double>());
  default:
    return pyRepr(j);
  }
}

std::string pyRepr(const json &j) {
  if (j.is_string()) {
    const std::string &s = j.get_ref<const std::string &>();
    const bool dq =
        s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
    std::string out(1, dq ? '"' : '\'');
    for (char c : s) {
      if (c == '\\')
        out += "\\\\";
      else if (c == '\n')
        out += "\\n";
      else if (c == '\r')
        out += "\\r";
      else if (c == '\t')
        out += "\\t";
      else if (c == (dq ? '"' : '\''))
        out += std::string("\\") + c;
      else
        out += c;
    }
    return out + (dq ? '"' : '\'');
  }
  if (j.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < j.size(); ++i)
      out += (i ? ", " : "") + pyRepr(j[i]);
    return out + "]";
  }
  if (j.is_object()) {
    std::string out = "{";
    bool first = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out += (first ? "" : ", ") + pyRepr(it.key()) + ": " + pyRepr(it.value());
      first = false;
    }
    return out + "}";
  }
  return pyStr(Value(j));
}

/// Python's json.dumps(x, ensure_ascii=False[, indent]): ", " and ": "
/// separators without an indent.
void pyJson(const json &j, int indent, int depth, std::string &out) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  switch (j.type()) {
  case json::value_t::string: {
    out += '"';
    for (unsigned char c : j.get_ref<const std::string &>()) {
      switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
      }
    }
    out += '"';
    return;
  }
  case json::value_t::null:
    out += "null";
    return;
  case json::value_t::boolean:
    out += j.get<bool>() ? "true" : "false";
    return;
  case json::value_t::number_float:
    out += pyFloat(j.get<double>());
    return;
  case json::value_t::array:
    if (j.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < j.size(); ++i) {
      if (i)
        out += indent >= 0 ? "," : ", ";
      if (indent >= 0)
        newline(depth + 1);
      pyJson(j[i], indent, depth + 1, out);
    }
    if (indent >= 0)
      newline(depth);
    out += ']';
    return;
  case json::value_t::object: {
    if (j.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    bool first = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!first)
        out += indent >= 0 ? "," : ", ";
      first = false;
      if (indent >= 0)
        newline(depth + 1);
      pyJson(it.key(), indent, depth + 1, out);
      out += ": ";
      pyJson(it.value(), indent, depth + 1, out);
    }
    if (indent >= 0)
      newline(depth);
    out += '}';
    return;
  }
  default:
    out += j.dump();
  }
}

bool isPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 ||
         c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
         c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

std::string fromCodePoints(const std::vector<char32_t> &cps, size_t b,
                           size_t e) {
  std::string out;
  for (size_t i = b; i < e; ++i)
    appendUtf8(out, cps[i]);
  return out;
}

/// str.strip / lstrip / rstrip with Python's default (whitespace) or a
/// set of characters.
std::string pyStrip(const std::string &s, const Value *chars, bool left,
                    bool right) {
  const std::vector<char32_t> cps = codePoints(s);
  std::vector<char32_t> set;
  if (chars && !chars->undefined && chars->j.is_string())
    set = codePoints(chars->j.get<std::string>());
  auto strip = [&](char32_t c) {
    return set.empty() && !(chars && chars->j.is_string())
               ? isPySpace(c)
               : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  while (left && b < e && strip(cps[b]))
    ++b;
  while (right && e > b && strip(cps[e - 1]))
    --e;
  return fromCodePoints(cps, b, e);
}

/// s with every `from` replaced by `to` (the replace filter and method).
std::string replaceAll(const std::string &s, const std::string &from,
                       const std::string &to, int line) {
  if (from.empty())
    fail(line, "replace of an empty string");
  std::string out;
  size_t at = 0, hit;
  while ((hit = s.find(from, at)) != std::string::npos) {
    out.append(s, at, hit - at);
    out += to;
    at = hit + from.size();
  }
  out.append(s, at, std::string::npos);
  return out;
}

/// Case mappings on code points (utf8proc's simple mappings: Python's
/// one-to-many special casings, ß to SS, are not applied): upper;
/// capitalize (the first
/// upper, the rest lower); Python's str.title (a letter after a non-letter
/// upper, other letters lower); Jinja's title filter (the first character
/// of each run after whitespace, '-' or an opening bracket upper, the rest
/// lower).
enum class Case { Upper, Capitalize, PyTitle, JinjaTitle };
std::string mapCase(const std::string &s, Case mode) {
  auto isLetter = [](char32_t c) {
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
  };
  auto up = [](char32_t c) {
    return static_cast<char32_t>(
        utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
  };
  auto low = [](char32_t c) {
    return static_cast<char32_t>(
        utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
  };
  std::string out;
  bool start = true;
  for (char32_t c : codePoints(s)) {
    char32_t m;
    switch (mode) {
    case Case::Upper:
      m = up(c);
      break;
    case Case::Capitalize:
      m = start ? up(c) : low(c);
      start = false;
      break;
    case Case::PyTitle:
      m = start && isLetter(c) ? up(c) : low(c);
      start = !isLetter(c);
      break;
    case Case::JinjaTitle:
      m = start ? up(c) : low(c);
      start = isPySpace(c) || c == '-' || c == '(' || c == '{' || c == '[' ||
              c == '<';
      break;
    }
    appendUtf8(out, m);
  }
  return out;
}

//===----------------------------------------------------------------------===//
// Lexer
//===----------------------------------------------------------------------===//

enum class Tok {
  Name,
  String,
  Int,
  Float,
  Op,
  End // end of a tag's tokens
};

struct Token {
  Tok kind;
  std::string text;
  int line;
};

/// One piece of the template: text, or a tag's tokens.
struct Piece {
  enum Kind { Text, Output, Statement } kind;
  std::string text; // Text
  std::vector<Token> tokens;
  int line;
};

std::vector<Token> lexTag(std::string_view s, int line) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '\n') {
      ++line;
      ++i;
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() &&
             (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_'))
        ++j;
      out.push_back({Tok::Name, std::string(s.substr(i, j - i)), line});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool isFloat = false;
      while (j < s.size() &&
             (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_'))
        ++j;
      if (j + 1 < s.size() && s[j] == '.' &&
          std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        isFloat = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j])))
          ++j;
      }
      std::string text(s.substr(i, j - i));
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      out.push_back({isFloat ? Tok::Float : Tok::Int, text, line});
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string text;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\n')
          ++line;
        if (s[j] != '\\' || j + 1 >= s.size()) {
          text += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
        case 'n':
          text += '\n';
          break;
        case 't':
          text += '\t';
          break;
        case 'r':
          text += '\r';
          break;
        case '\\':
          text += '\\';
          break;
        case '\'':
          text += '\'';
          break;
        case '"':
          text += '"';
          break;
        case 'u': {
          unsigned cp = 0;
          const char *b = s.data() + j + 1;
          auto [end, ec] =
              j + 4 < s.size()
                  ? std::from_chars(b, b + 4, cp, 16)
                  : std::from_chars_result{b, std::errc::invalid_argument};
          if (ec != std::errc() || end != b + 4)
            fail(line, "bad \\u escape in a string");
          appendUtf8(text, static_cast<char32_t>(cp));
          j += 4;
          break;
        }
        default:
          text += '\\';
          text += e;
        }
      }
      if (j >= s.size())
        fail(line, "unterminated string");
      out.push_back({Tok::String, text, line});
      i = j + 1;
      continue;
    }
    static const char *ops[] = {
        "==", "!=", "<=", ">=", "//", "**", "<", ">", "+", "-", "*", "/", "%",
        "~",  "(",  ")",  "[",  "]",  "{",  "}", ",", ":", ".", "|", "="};
    bool matched = false;
    for (const char *op : ops) {
      const size_t n = std::strlen(op);
      if (s.compare(i, n, op) == 0) {
        out.push_back({Tok::Op, op, line});
        i += n;
        matched = true;
        break;
      }
    }
    if (!matched)
      fail(line,
           absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }
  out.push_back({Tok::End, "", line});
  return out;
}

/// The template's pieces with Jinja's whitespace rules applied
/// (trim_blocks, lstrip_blocks, '-' and '+' modifiers), as jinja2's lexer
/// applies them.
std::vector<Piece> lexTemplate(std::string_view src) {
  std::vector<Piece> pieces;
  size_t i = 0;
  int line = 1;
  bool trimNext = false;    // a '-' closed the last tag
  bool newlineNext = false; // trim_blocks: one newline after a block tag
  for (;;) {
    // The text starts after what the last tag's suffix consumed.
    size_t textStart = i;
    if (trimNext)
      while (textStart < src.size() &&
             std::isspace(static_cast<unsigned char>(src[textStart])))
        ++textStart;
    else if (newlineNext && textStart < src.size() && src[textStart] == '\n')
      ++textStart;
    trimNext = newlineNext = false;
    line += static_cast<int>(
        std::count(src.begin() + i, src.begin() + textStart, '\n'));
    size_t open = src.find('{', textStart);
    while (open != std::string_view::npos &&
           (open + 1 >= src.size() ||
            (src[open + 1] != '{' && src[open + 1] != '%' &&
             src[open + 1] != '#')))
      open = open + 1 >= src.size() ? std::string_view::npos
                                    : src.find('{', open + 1);
    const size_t textEnd = open == std::string_view::npos ? src.size() : open;
    std::string text(src.substr(textStart, textEnd - textStart));
    const int textLine = line;
    line += static_cast<int>(std::count(text.begin(), text.end(), '\n'));
    if (open == std::string_view::npos) {
      if (!text.empty())
        pieces.push_back({Piece::Text, text, {}, textLine});
      break;
    }
    const char kind = src[open + 1];
    const char *closer = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t inner = open + 2;
    bool stripBefore = false, keepIndent = false;
    if (inner < src.size() && src[inner] == '-') {
      stripBefore = true;
      ++inner;
    } else if (inner < src.size() && src[inner] == '+') {
      keepIndent = true;
      ++inner;
    }
    const size_t close = src.find(closer, inner);
    if (close == std::string_view::npos)
      fail(line,
           absl::StrCat("unclosed '", std::string(src.substr(open, 2)), "'"));
    size_t innerEnd = close;
    bool stripAfter = false, keepNewline = false;
    if (innerEnd > inner && src[innerEnd - 1] == '-') {
      stripAfter = true;
      --innerEnd;
    } else if (innerEnd > inner && src[innerEnd - 1] == '+') {
      keepNewline = true;
      --innerEnd;
    }
    if (stripBefore) {
      size_t k = text.size();
      while (k > 0 && std::isspace(static_cast<unsigned char>(text[k - 1])))
        --k;
      text.erase(k);
    } else if (kind != '{' && !keepIndent) {
      // lstrip_blocks: the spaces and tabs between the line's start and a
      // block or comment tag, when nothing else is there.
      const size_t lineStart = text.rfind('\n') + 1; // 0 without a newline
      const bool atLineStart =
          lineStart > 0 || textStart == 0 || src[textStart - 1] == '\n';
      bool blank = true;
      for (size_t k = lineStart; k < text.size(); ++k)
        blank = blank && (text[k] == ' ' || text[k] == '\t');
      if (atLineStart && blank)
        text.erase(lineStart);
    }
    if (!text.empty())
      pieces.push_back({Piece::Text, text, {}, textLine});
    const int tagLine = line;
    line += static_cast<int>(
        std::count(src.begin() + open, src.begin() + close + 2, '\n'));
    if (kind != '#')
      pieces.push_back({kind == '{' ? Piece::Output : Piece::Statement, "",
                        lexTag(src.substr(inner, innerEnd - inner), tagLine),
                        tagLine});
    trimNext = stripAfter;
    newlineNext = kind != '{' && !keepNewline;
    i = close + 2;
  }
  return pieces;
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

struct Expr {
  enum Kind {
    Literal,
    Name,
    List,
    Dict,
    Attr,
    Index,
    Slice,
    Call,
    Filter,
    Test,
    Unary,
    Binary,
    And,
    Or,
    Not,
    Cond
  } kind;
  int line;
  json value;       // Literal
  std::string name; // Name, Attr, Call (method), Filter, Test, Unary/Binary op
  std::vector<std::unique_ptr<Expr>> args; // operands / arguments
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negate = false; // Test: "is not"; Binary "not in"
};

using ExprPtr = std::unique_ptr<Expr>;

ExprPtr make(Expr::Kind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

const std::vector<std::string> &knownFilters() {
  static const std::vector<std::string> f = {
      "length", "count", "trim",    "tojson",  "string",     "upper",
      "lower",  "first", "last",    "join",    "default",    "d",
      "list",   "items", "replace", "int",     "float",      "abs",
      "safe",   "e",     "escape",  "reverse", "capitalize", "title"};
  return f;
}

/// The keyword arguments each filter reads.
bool filterTakes(const std::string &filter, const std::string &keyword) {
  static const std::map<std::string, std::vector<std::string>> takes = {
      {"tojson", {"indent", "sort_keys"}},
      {"default", {"default_value", "boolean"}},
      {"d", {"default_value", "boolean"}},
      {"trim", {"chars"}},
      {"join", {"d"}},
      {"replace", {"old", "new"}}};
  auto it = takes.find(filter);
  return it != takes.end() && std::find(it->second.begin(), it->second.end(),
                                        keyword) != it->second.end();
}

const std::vector<std::string> &knownTests() {
  static const std::vector<std::string> t = {
      "defined",     "undefined", "none",    "string",   "number",
      "integer",     "float",     "mapping", "iterable", "sequence",
      "boolean",     "true",      "false",   "odd",      "even",
      "divisibleby", "in",        "eq",      "ne",       "callable"};
  return t;
}

class Parser {
public:
  explicit Parser(const std::vector<Token> &toks) : t(toks) {}

  const Token &peek(size_t ahead = 0) const {
    return t[std::min(pos + ahead, t.size() - 1)];
  }
  bool isOp(const char *op, size_t ahead = 0) const {
    return peek(ahead).kind == Tok::Op && peek(ahead).text == op;
  }
  bool isName(const char *name, size_t ahead = 0) const {
    return peek(ahead).kind == Tok::Name && peek(ahead).text == name;
  }
  const Token &next() { return t[pos < t.size() - 1 ? pos++ : pos]; }
  void expectOp(const char *op) {
    if (!isOp(op))
      fail(peek().line,
           absl::StrCat("expected '", op, "' but found '", peek().text, "'"));
    ++pos;
  }
  std::string expectName() {
    if (peek().kind != Tok::Name)
      fail(peek().line,
           absl::StrCat("expected a name but found '", peek().text, "'"));
    return next().text;
  }
  bool atEnd() const { return peek().kind == Tok::End; }
  void expectEnd() {
    if (!atEnd())
      fail(peek().line, absl::StrCat("unexpected '", peek().text, "'"));
  }

  ExprPtr expression() {
    // Nesting is bounded so that hostile templates cannot exhaust the stack.
    struct Depth {
      int &d;
      Depth(int &d, int line) : d(d) {
        if (++d > 100)
          fail(line, "expression nested too deeply");
      }
      ~Depth() { --d; }
    } depth(this->depth, peek().line);
    ExprPtr e = orExpr();
    if (isName("if")) {
      const int line = next().line;
      auto c = make(Expr::Cond, line);
      ExprPtr cond = orExpr();
      ExprPtr otherwise;
      if (isName("else")) {
        next();
        otherwise = expression();
      } else {
        otherwise = make(Expr::Literal, line);
        otherwise->kind = Expr::Name;
        otherwise->name = "\x01undefined";
      }
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(otherwise));
      return c;
    }
    return e;
  }

private:
  ExprPtr orExpr() {
    ExprPtr e = andExpr();
    while (isName("or")) {
      auto o = make(Expr::Or, next().line);
      link(o->line);
      o->args.push_back(std::move(e));
      o->args.push_back(andExpr());
      e = std::move(o);
    }
    return e;
  }
  ExprPtr andExpr() {
    ExprPtr e = notExpr();
    while (isName("and")) {
      auto a = make(Expr::And, next().line);
      link(a->line);
      a->args.push_back(std::move(e));
      a->args.push_back(notExpr());
      e = std::move(a);
    }
    return e;
  }
  ExprPtr notExpr() {
    if (isName("not")) {
      auto n = make(Expr::Not, next().line);
      if (++depth > 100)
        fail(n->line, "expression nested too deeply");
      n->args.push_back(notExpr());
      --depth;
      return n;
    }
    return compare();
  }
  /// One more operand in a chain (a + b + ..., x.a.b...): the trees are
  /// left-deep, so the evaluator recurses once per link; a tag's links
  /// are bounded.
  void link(int line) {
    if (++links > 1000)
      fail(line, "expression too long");
  }
  // Precedence as jinja2's parser: compare < + - < ~ < * / // % < unary
  // < filters and tests < postfix.
  ExprPtr compare() {
    ExprPtr e = additive();
    for (;;) {
      std::string op;
      bool negate = false;
      if (peek().kind == Tok::Op && (isOp("==") || isOp("!=") || isOp("<") ||
                                     isOp(">") || isOp("<=") || isOp(">="))) {
        op = next().text;
      } else if (isName("in")) {
        next();
        op = "in";
      } else if (isName("not") && isName("in", 1)) {
        pos += 2;
        op = "in";
        negate = true;
      } else {
        break;
      }
      auto b = make(Expr::Binary, peek().line);
      link(b->line);
      b->name = op;
      b->negate = negate;
      b->args.push_back(std::move(e));
      b->args.push_back(additive());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr additive() {
    ExprPtr e = concat();
    while (isOp("+") || isOp("-")) {
      auto b = make(Expr::Binary, peek().line);
      link(b->line);
      b->name = next().text;
      b->args.push_back(std::move(e));
      b->args.push_back(concat());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr concat() {
    ExprPtr e = multiplicative();
    while (isOp("~")) {
      auto b = make(Expr::Binary, next().line);
      link(b->line);
      b->name = "~";
      b->args.push_back(std::move(e));
      b->args.push_back(multiplicative());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr multiplicative() {
    ExprPtr e = unary(true);
    while (isOp("*") || isOp("/") || isOp("//") || isOp("%")) {
      auto b = make(Expr::Binary, peek().line);
      link(b->line);
      b->name = next().text;
      b->args.push_back(std::move(e));
      b->args.push_back(unary(true));
      e = std::move(b);
    }
    return e;
  }
  /// A sign applies to the postfix expression, the filters and tests to
  /// the signed value (-x|abs is abs(-x)).
  ExprPtr unary(bool withFilters) {
    ExprPtr e;
    if (isOp("-") || isOp("+")) {
      auto u = make(Expr::Unary, peek().line);
      u->name = next().text;
      if (++depth > 100)
        fail(u->line, "expression nested too deeply");
      u->args.push_back(unary(false));
      --depth;
      e = std::move(u);
    } else {
      e = postfix();
    }
    return withFilters ? filtersAndTests(std::move(e)) : std::move(e);
  }
  ExprPtr filtersAndTests(ExprPtr e) {
    for (;;) {
      if (isOp("|")) {
        const int line = next().line;
        link(line);
        auto f = make(Expr::Filter, line);
        f->name = expectName();
        if (std::find(knownFilters().begin(), knownFilters().end(), f->name) ==
            knownFilters().end())
          fail(line, absl::StrCat("unsupported filter '", f->name, "'"));
        f->args.push_back(std::move(e));
        if (isOp("("))
          arguments(*f);
        // A keyword the filter does not take would be ignored: refused.
        for (const auto &[key, value] : f->kwargs)
          if (!filterTakes(f->name, key))
            fail(line, absl::StrCat("filter '", f->name, "' has no argument '",
                                    key, "'"));
        e = std::move(f);
      } else if (isName("is")) {
        const int line = next().line;
        link(line);
        auto test = make(Expr::Test, line);
        if (isName("not")) {
          next();
          test->negate = true;
        }
        test->name = expectName();
        if (std::find(knownTests().begin(), knownTests().end(), test->name) ==
            knownTests().end())
          fail(line, absl::StrCat("unsupported test '", test->name, "'"));
        test->args.push_back(std::move(e));
        if (isOp("(")) {
          next();
          while (!isOp(")")) {
            test->args.push_back(expression());
            if (!isOp(")"))
              expectOp(",");
          }
          next();
        } else if (peek().kind == Tok::String || peek().kind == Tok::Int ||
                   peek().kind == Tok::Float ||
                   (peek().kind == Tok::Name && !isName("and") &&
                    !isName("or") && !isName("else") && !isName("if") &&
                    !isName("is") && !isName("in") && !isName("not"))) {
          test->args.push_back(postfix());
        }
        e = std::move(test);
      } else {
        return e;
      }
    }
  }
  void arguments(Expr &call) {
    expectOp("(");
    while (!isOp(")")) {
      if (peek().kind == Tok::Name && isOp("=", 1)) {
        std::string key = next().text;
        next();
        call.kwargs.emplace_back(key, expression());
      } else {
        call.args.push_back(expression());
      }
      if (!isOp(")"))
        expectOp(",");
    }
    next();
  }
  ExprPtr postfix() {
    ExprPtr e = primary();
    for (;;) {
      if (isOp(".")) {
        const int line = next().line;
        link(line);
        auto a = make(Expr::Attr, line);
        a->name = peek().kind == Tok::Int ? next().text : expectName();
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (isOp("[")) {
        const int line = next().line;
        link(line);
        ExprPtr parts[3];
        bool slice = false;
        int part = 0;
        while (!isOp("]")) {
          if (isOp(":")) {
            next();
            slice = true;
            if (++part > 2)
              fail(line, "bad slice");
            continue;
          }
          parts[part] = expression();
        }
        next();
        auto x = make(slice ? Expr::Slice : Expr::Index, line);
        x->args.push_back(std::move(e));
        for (auto &p : parts)
          x->args.push_back(std::move(p));
        if (!slice && !x->args[1])
          fail(line, "empty subscript");
        e = std::move(x);
      } else if (isOp("(")) {
        link(peek().line);
        auto c = make(Expr::Call, peek().line);
        c->args.push_back(std::move(e));
        arguments(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }
  ExprPtr primary() {
    const Token &tok = next();
    switch (tok.kind) {
    case Tok::String: {
      auto l = make(Expr::Literal, tok.line);
      l->value = tok.text;
      // Adjacent string literals concatenate.
      while (peek().kind == Tok::String)
        l->value = l->value.get<std::string>() + next().text;
      return l;
    }
    case Tok::Int: {
      auto l = make(Expr::Literal, tok.line);
      int64_t v = 0;
      auto [end, ec] = std::from_chars(tok.text.data(),
                                       tok.text.data() + tok.text.size(), v);
      if (ec != std::errc())
        fail(tok.line, absl::StrCat("integer '", tok.text, "' out of range"));
      l->value = v;
      return l;
    }
    case Tok::Float: {
      auto l = make(Expr::Literal, tok.line);
      double v = 0;
      auto [end, ec] = std::from_chars(tok.text.data(),
                                       tok.text.data() + tok.text.size(), v);
      if (ec != std::errc())
        fail(tok.line, absl::StrCat("number '", tok.text, "' out of range"));
      l->value = v;
      return l;
    }
    case Tok::Name: {
      auto l = make(Expr::Literal, tok.line);
      if (tok.text == "true" || tok.text == "True")
        l->value = true;
      else if (tok.text == "false" || tok.text == "False")
        l->value = false;
      else if (tok.text == "none" || tok.text == "None")
        l->value = nullptr;
      else {
        l->kind = Expr::Name;
        l->name = tok.text;
      }
      return l;
    }
    case Tok::Op:
      if (tok.text == "(") {
        ExprPtr e = expression();
        if (isOp(",")) {
          // A tuple: a list here.
          auto list = make(Expr::List, tok.line);
          list->args.push_back(std::move(e));
          while (isOp(",")) {
            next();
            if (isOp(")"))
              break;
            list->args.push_back(expression());
          }
          e = std::move(list);
        }
        expectOp(")");
        return e;
      }
      if (tok.text == "[") {
        auto list = make(Expr::List, tok.line);
        while (!isOp("]")) {
          list->args.push_back(expression());
          if (!isOp("]"))
            expectOp(",");
        }
        next();
        return list;
      }
      if (tok.text == "{") {
        auto dict = make(Expr::Dict, tok.line);
        while (!isOp("}")) {
          dict->args.push_back(expression());
          expectOp(":");
          dict->args.push_back(expression());
          if (!isOp("}"))
            expectOp(",");
        }
        next();
        return dict;
      }
      [[fallthrough]];
    default:
      fail(tok.line, absl::StrCat("unexpected '", tok.text, "'"));
    }
  }

  const std::vector<Token> &t;
  size_t pos = 0;
  int depth = 0, links = 0;
};

} // namespace

//===----------------------------------------------------------------------===//
// Statements
//===----------------------------------------------------------------------===//

struct ChatTemplate::Node {
  enum Kind { Block, Text, Output, If, For, Set, Break, Continue } kind;
  int line = 0;
  std::string text; // Text
  ExprPtr expr;     // Output, For (iterable), Set (value)
  std::vector<std::unique_ptr<Node>> children; // Block
  // If: conditions[i] guards bodies[i]; a last body without a condition
  // is the else. For: bodies[0] the loop, bodies[1] the else.
  std::vector<ExprPtr> conditions;
  std::vector<std::unique_ptr<Node>> bodies;
  std::vector<std::string> targets; // For; Set: [name] or [ns, attr]
  ExprPtr filter;                   // For ... if
};

namespace {
using Node = ChatTemplate::Node;

class StatementParser {
public:
  explicit StatementParser(std::vector<Piece> pieces)
      : pieces(std::move(pieces)) {}

  std::unique_ptr<Node> parseAll() {
    auto root = block({});
    if (pos < pieces.size())
      fail(pieces[pos].line,
           absl::StrCat("unexpected '", pieces[pos].tokens[0].text, "'"));
    return root;
  }

private:
  /// Statements up to one whose keyword is in `stops` (left unconsumed).
  std::unique_ptr<Node> block(const std::vector<std::string> &stops) {
    if (++depth > 100)
      fail(pos < pieces.size() ? pieces[pos].line : 1,
           "blocks nested too deeply");
    struct Leave {
      int &d;
      ~Leave() { --d; }
    } leave{depth};
    auto b = std::make_unique<Node>();
    b->kind = Node::Block;
    while (pos < pieces.size()) {
      Piece &p = pieces[pos];
      if (p.kind == Piece::Text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Text;
        n->text = p.text;
        b->children.push_back(std::move(n));
        ++pos;
        continue;
      }
      if (p.kind == Piece::Output) {
        Parser parser(p.tokens);
        auto n = std::make_unique<Node>();
        n->kind = Node::Output;
        n->line = p.line;
        n->expr = parser.expression();
        parser.expectEnd();
        b->children.push_back(std::move(n));
        ++pos;
        continue;
      }
      const std::string keyword =
          p.tokens[0].kind == Tok::Name ? p.tokens[0].text : "";
      if (std::find(stops.begin(), stops.end(), keyword) != stops.end())
        return b;
      b->children.push_back(statement(keyword));
    }
    if (!stops.empty())
      fail(pieces.empty() ? 1 : pieces.back().line,
           absl::StrCat("missing '{% ", stops.back(), " %}'"));
    return b;
  }

  std::unique_ptr<Node> statement(const std::string &keyword) {
    Piece &p = pieces[pos];
    Parser parser(p.tokens);
    parser.next(); // the keyword
    auto n = std::make_unique<Node>();
    n->line = p.line;
    if (keyword == "if") {
      n->kind = Node::If;
      n->conditions.push_back(parser.expression());
      parser.expectEnd();
      ++pos;
      for (;;) {
        n->bodies.push_back(block({"elif", "else", "endif"}));
        Piece &q = pieces[pos];
        Parser next(q.tokens);
        const std::string k = next.next().text;
        ++pos;
        if (k == "elif") {
          n->conditions.push_back(next.expression());
          next.expectEnd();
        } else if (k == "else") {
          next.expectEnd();
          n->bodies.push_back(block({"endif"}));
          ++pos;
          return n;
        } else {
          next.expectEnd();
          return n;
        }
      }
    }
    if (keyword == "for") {
      n->kind = Node::For;
      n->targets.push_back(parser.expectName());
      while (parser.isOp(",")) {
        parser.next();
        n->targets.push_back(parser.expectName());
      }
      if (!parser.isName("in"))
        fail(p.line, "expected 'in' in for");
      parser.next();
      // The iterable, without a trailing "if filter" (which is the loop's).
      n->expr = parser.expression();
      if (n->expr->kind == Expr::Cond) {
        // "for x in xs if cond": the parser read a conditional expression.
        Expr &c = *n->expr;
        if (!(c.args[2]->kind == Expr::Name &&
              c.args[2]->name == "\x01undefined"))
          fail(p.line, "for ... if ... else is not a loop filter");
        n->filter = std::move(c.args[1]);
        n->expr = std::move(c.args[0]);
      }
      if (parser.isName("recursive"))
        fail(p.line, "recursive loops are not supported");
      parser.expectEnd();
      ++pos;
      n->bodies.push_back(block({"else", "endfor"}));
      Piece &q = pieces[pos];
      Parser next(q.tokens);
      const std::string k = next.next().text;
      next.expectEnd();
      ++pos;
      if (k == "else") {
        n->bodies.push_back(block({"endfor"}));
        ++pos;
      }
      return n;
    }
    if (keyword == "set") {
      n->kind = Node::Set;
      n->targets.push_back(parser.expectName());
      if (parser.isOp(".")) {
        parser.next();
        n->targets.push_back(parser.expectName());
      }
      if (!parser.isOp("="))
        fail(p.line, "block set ({% set x %}...{% endset %}) is not supported");
      parser.next();
      n->expr = parser.expression();
      parser.expectEnd();
      ++pos;
      return n;
    }
    if (keyword == "break" || keyword == "continue") {
      n->kind = keyword == "break" ? Node::Break : Node::Continue;
      parser.expectEnd();
      ++pos;
      return n;
    }
    fail(p.line, absl::StrCat("unsupported tag '{% ", keyword, " %}'"));
  }

  std::vector<Piece> pieces;
  size_t pos = 0;
  int depth = 0;
};

//===----------------------------------------------------------------------===//
// Evaluation
//===----------------------------------------------------------------------===//

struct LoopSignal {
  bool isBreak;
};

class Renderer {
public:
  explicit Renderer(const json &context) {
    scopes.push_back({});
    globals(context);
  }

  void run(const Node &n, std::string &out) {
    switch (n.kind) {
    case Node::Block:
      for (const auto &c : n.children)
        run(*c, out);
      return;
    case Node::Text:
      out += n.text;
      return;
    case Node::Output:
      out += pyStr(eval(*n.expr));
      return;
    case Node::If:
      for (size_t i = 0; i < n.bodies.size(); ++i)
        if (i >= n.conditions.size() || truthy(eval(*n.conditions[i]))) {
          run(*n.bodies[i], out);
          return;
        }
      return;
    case Node::Set: {
      Value v = eval(*n.expr);
      if (n.targets.size() == 2) {
        Value ns = lookup(n.targets[0], n.line);
        if (!ns.ns)
          fail(n.line,
               absl::StrCat("'", n.targets[0],
                            "' is not a namespace: cannot set ", n.targets[1]));
        (*ns.ns)[n.targets[1]] = v.data();
        return;
      }
      scopes.back()[n.targets[0]] = v;
      return;
    }
    case Node::Break:
      throw LoopSignal{true};
    case Node::Continue:
      throw LoopSignal{false};
    case Node::For:
      runFor(n, out);
      return;
    }
  }

private:
  void globals(const json &context) {
    for (auto it = context.begin(); it != context.end(); ++it)
      scopes[0][it.key()] = Value(it.value());
  }

  Value lookup(const std::string &name, int line) {
    (void)line;
    for (auto s = scopes.rbegin(); s != scopes.rend(); ++s)
      if (auto it = s->find(name); it != s->end())
        return it->second;
    return Value::undef();
  }

  void runFor(const Node &n, std::string &out) {
    Value seq = eval(*n.expr);
    std::vector<json> items;
    const json &d = seq.data();
    if (seq.undefined)
      fail(n.line, "for over an undefined value");
    if (d.is_array())
      items.assign(d.begin(), d.end());
    else if (d.is_object())
      for (auto it = d.begin(); it != d.end(); ++it)
        items.push_back(it.key());
    else if (d.is_string())
      for (char32_t c : codePoints(d.get<std::string>())) {
        std::string s;
        appendUtf8(s, c);
        items.push_back(s);
      }
    else
      fail(n.line, "for over a value that is not iterable");
    auto bind = [&](std::map<std::string, Value> &scope, const json &item) {
      if (n.targets.size() == 1) {
        scope[n.targets[0]] = Value(item);
        return;
      }
      if (!item.is_array() || item.size() != n.targets.size())
        fail(n.line, "cannot unpack the loop item into the loop's names");
      for (size_t i = 0; i < n.targets.size(); ++i)
        scope[n.targets[i]] = Value(item[i]);
    };
    if (n.filter) {
      std::vector<json> kept;
      for (const json &item : items) {
        scopes.push_back({});
        bind(scopes.back(), item);
        const bool keep = truthy(eval(*n.filter));
        scopes.pop_back();
        if (keep)
          kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (n.bodies.size() > 1)
        run(*n.bodies[1], out);
      return;
    }
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      scopes.push_back({});
      bind(scopes.back(), items[i]);
      json loop = {{"index", i + 1},          {"index0", i},
                   {"first", i == 0},         {"last", i == len - 1},
                   {"length", len},           {"revindex", len - i},
                   {"revindex0", len - i - 1}};
      // Undefined at the ends (absent keys read as undefined).
      if (i > 0)
        loop["previtem"] = items[i - 1];
      if (i + 1 < len)
        loop["nextitem"] = items[i + 1];
      scopes.back()["loop"] = Value(loop);
      bool stop = false;
      try {
        run(*n.bodies[0], out);
      } catch (const LoopSignal &s) {
        stop = s.isBreak;
      }
      scopes.pop_back();
      if (stop)
        break;
    }
  }

  static std::string describe(const Value &v) {
    return v.undefined ? "an undefined value" : pyRepr(v.data());
  }
  static double number(const Value &v, int line) {
    const json &j = v.data();
    if (j.is_number())
      return j.get<double>();
    if (j.is_boolean())
      return j.get<bool>() ? 1 : 0;
    fail(line, absl::StrCat("expected a number, got ", pyRepr(j)));
  }
  static bool isInt(const json &j) {
    return j.is_number_integer() || j.is_number_unsigned() || j.is_boolean();
  }
  static int64_t integer(const json &j) {
    return j.is_boolean() ? j.get<bool>() : j.get<int64_t>();
  }

  Value attribute(const Value &base, const std::string &name, int line) {
    if (base.undefined)
      fail(line, absl::StrCat("'", name, "' of an undefined value"));
    const json &d = base.data();
    if (d.is_object()) {
      auto it = d.find(name);
      return it == d.end() ? Value::undef() : Value(*it);
    }
    if (d.is_array() && !name.empty() &&
        std::isdigit(static_cast<unsigned char>(name[0]))) {
      size_t i = 0;
      auto [end, ec] =
          std::from_chars(name.data(), name.data() + name.size(), i);
      return ec == std::errc() && i < d.size() ? Value(d[i]) : Value::undef();
    }
    return Value::undef();
  }

  Value index(const Value &base, const Value &key, int line) {
    if (base.undefined)
      fail(line, "subscript of an undefined value");
    const json &d = base.data();
    const json &k = key.data();
    if (d.is_object()) {
      if (!k.is_string())
        return Value::undef();
      auto it = d.find(k.get<std::string>());
      return it == d.end() ? Value::undef() : Value(*it);
    }
    if ((d.is_array() || d.is_string()) && isInt(k)) {
      std::vector<char32_t> cps;
      const int64_t size =
          d.is_array() ? static_cast<int64_t>(d.size())
                       : static_cast<int64_t>(
                             (cps = codePoints(d.get<std::string>())).size());
      int64_t i = integer(k);
      if (i < 0)
        i += size;
      if (i < 0 || i >= size)
        return Value::undef(); // as Jinja's subscript
      if (d.is_array())
        return Value(d[static_cast<size_t>(i)]);
      return Value(fromCodePoints(cps, static_cast<size_t>(i),
                                  static_cast<size_t>(i + 1)));
    }
    return Value::undef();
  }

  Value slice(const Value &base, const Expr &e) {
    const json &d = base.data();
    auto bound = [&](int i) -> std::optional<int64_t> {
      if (!e.args[i])
        return std::nullopt;
      Value v = eval(*e.args[i]);
      if (v.data().is_null())
        return std::nullopt;
      if (!isInt(v.data()))
        fail(e.line, "slice bounds must be integers");
      return integer(v.data());
    };
    std::optional<int64_t> lo = bound(1), hi = bound(2), st = bound(3);
    const int64_t step = st.value_or(1);
    if (step == 0)
      fail(e.line, "slice step cannot be zero");
    std::vector<char32_t> cps;
    int64_t size;
    if (d.is_array())
      size = static_cast<int64_t>(d.size());
    else if (d.is_string())
      size =
          static_cast<int64_t>((cps = codePoints(d.get<std::string>())).size());
    else
      fail(e.line, "slice of a value that is not a list or a string");
    // Python's slice.indices.
    auto clampIndex = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v)
        return dflt;
      int64_t x = *v;
      if (x < 0)
        x += size;
      if (step > 0)
        return std::clamp<int64_t>(x, 0, size);
      return std::clamp<int64_t>(x, -1, size - 1);
    };
    const int64_t start = clampIndex(lo, step > 0 ? 0 : size - 1);
    const int64_t stop = clampIndex(hi, step > 0 ? size : -1);
    json out = d.is_array() ? json::array() : json();
    std::string s;
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
      if (d.is_array())
        out.push_back(d[static_cast<size_t>(i)]);
      else
        appendUtf8(s, cps[static_cast<size_t>(i)]);
      if (__builtin_add_overflow(i, step, &i))
        break;
    }
    return d.is_array() ? Value(out) : Value(s);
  }

  bool contains(const Value &container, const Value &item, int line) {
    const json &c = container.data();
    const json &x = item.data();
    if (c.is_string()) {
      if (!x.is_string())
        fail(line, "'in <string>' needs a string on the left");
      return c.get_ref<const std::string &>().find(
                 x.get_ref<const std::string &>()) != std::string::npos;
    }
    if (c.is_array())
      return std::find(c.begin(), c.end(), x) != c.end();
    if (c.is_object())
      return x.is_string() && c.contains(x.get<std::string>());
    if (container.undefined)
      fail(line, "'in' an undefined value");
    fail(line, "'in' a value that is not a container");
  }

  Value binary(const Expr &e) {
    const std::string &op = e.name;
    Value a = eval(*e.args[0]);
    Value b = eval(*e.args[1]);
    const json &x = a.data(), &y = b.data();
    if (op == "in") {
      const bool in = contains(b, a, e.line);
      return Value(e.negate ? !in : in);
    }
    if (op == "~")
      return Value(pyStr(a) + pyStr(b));
    if (op == "==" || op == "!=") {
      bool eq = (a.undefined && b.undefined) ||
                (!a.undefined && !b.undefined && x == y);
      if (!a.undefined && !b.undefined && x.is_number() && y.is_number())
        eq = x.get<double>() == y.get<double>();
      return Value(op == "==" ? eq : !eq);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp;
      if (x.is_string() && y.is_string())
        cmp = x.get<std::string>().compare(y.get<std::string>());
      else {
        const double p = number(a, e.line), q = number(b, e.line);
        cmp = p < q ? -1 : p > q ? 1 : 0;
      }
      return Value(op == "<"    ? cmp < 0
                   : op == ">"  ? cmp > 0
                   : op == "<=" ? cmp <= 0
                                : cmp >= 0);
    }
    if (op == "+") {
      if (x.is_string() && y.is_string())
        return Value(x.get<std::string>() + y.get<std::string>());
      if (x.is_array() && y.is_array()) {
        json out = x;
        out.insert(out.end(), y.begin(), y.end());
        return Value(out);
      }
      if (a.undefined || b.undefined || x.is_string() || y.is_string())
        fail(e.line,
             absl::StrCat("cannot add ", describe(a), " and ", describe(b)));
    }
    if (op == "*" && x.is_string() && isInt(y)) {
      std::string out;
      for (int64_t i = 0; i < integer(y); ++i)
        out += x.get<std::string>();
      return Value(out);
    }
    if (op == "%" && x.is_string())
      fail(e.line, "string formatting with % is not supported");
    const bool ints = isInt(x) && isInt(y);
    if (ints && op != "/") {
      const int64_t p = integer(x), q = integer(y);
      if ((op == "//" || op == "%") && q == 0)
        fail(e.line, "division by zero");
      if ((op == "//" || op == "%") && q == -1)
        return Value(op == "//" ? (p == INT64_MIN ? p : -p) : int64_t{0});
      if (op == "+")
        return Value(p + q);
      if (op == "-")
        return Value(p - q);
      if (op == "*")
        return Value(p * q);
      if (op == "//")
        return Value(static_cast<int64_t>(
            std::floor(static_cast<double>(p) / static_cast<double>(q))));
      if (op == "%") {
        int64_t r = p % q;
        if (r != 0 && ((r < 0) != (q < 0)))
          r += q;
        return Value(r);
      }
    }
    const double p = number(a, e.line), q = number(b, e.line);
    if (op == "+")
      return Value(p + q);
    if (op == "-")
      return Value(p - q);
    if (op == "*")
      return Value(p * q);
    if (q == 0)
      fail(e.line, "division by zero");
    if (op == "/")
      return Value(p / q);
    if (op == "//")
      return Value(std::floor(p / q));
    return Value(p - q * std::floor(p / q));
  }

  Value test(const Expr &e) {
    Value v = eval(*e.args[0]);
    const json &d = v.data();
    const std::string &t = e.name;
    bool r;
    if (t == "defined")
      r = !v.undefined;
    else if (t == "undefined")
      r = v.undefined;
    else if (t == "none")
      r = !v.undefined && !v.ns && d.is_null();
    else if (t == "string")
      r = !v.undefined && d.is_string();
    else if (t == "number")
      r = !v.undefined && d.is_number();
    else if (t == "integer")
      r = !v.undefined && (d.is_number_integer() || d.is_number_unsigned());
    else if (t == "float")
      r = !v.undefined && d.is_number_float();
    else if (t == "mapping")
      r = !v.undefined && (d.is_object() || v.ns);
    else if (t == "iterable" || t == "sequence")
      r = !v.undefined && (d.is_array() || d.is_string() || d.is_object());
    else if (t == "boolean")
      r = !v.undefined && d.is_boolean();
    else if (t == "true")
      r = !v.undefined && d.is_boolean() && d.get<bool>();
    else if (t == "false")
      r = !v.undefined && d.is_boolean() && !d.get<bool>();
    else if (t == "odd" || t == "even") {
      if (!isInt(d))
        fail(e.line, "odd / even of a value that is not an integer");
      r = (integer(d) % 2 != 0) == (t == "odd");
    } else if (t == "divisibleby") {
      if (e.args.size() < 2)
        fail(e.line, "divisibleby needs a number");
      const int64_t by = integer(eval(*e.args[1]).data());
      if (by == 0)
        fail(e.line, "divisibleby 0");
      r = by == -1 || integer(d) % by == 0;
    } else if (t == "in") {
      if (e.args.size() < 2)
        fail(e.line, "in needs a container");
      r = contains(eval(*e.args[1]), v, e.line);
    } else if (t == "eq" || t == "ne") {
      if (e.args.size() < 2)
        fail(e.line, "eq / ne need a value");
      r = (d == eval(*e.args[1]).data()) == (t == "eq");
    } else {
      r = false; // callable: templates only see data
    }
    return Value(e.negate ? !r : r);
  }

  Value arg(const Expr &call, size_t i, const char *keyword,
            std::optional<json> fallback = std::nullopt) {
    for (const auto &[k, v] : call.kwargs)
      if (k == keyword)
        return eval(*v);
    if (i < call.args.size())
      return eval(*call.args[i]);
    if (fallback)
      return Value(*fallback);
    return Value::undef();
  }

  Value filter(const Expr &e) {
    Value v = eval(*e.args[0]);
    const json &d = v.data();
    const std::string &f = e.name;
    // Arguments after the filtered value: args[1..].
    auto a = [&](size_t i, const char *kw,
                 std::optional<json> fb = std::nullopt) {
      return arg(e, i + 1, kw, fb);
    };
    if (f == "default" || f == "d") {
      Value dflt = a(0, "default_value", json(""));
      const bool boolean = truthy(a(1, "boolean", json(false)));
      return v.undefined || (boolean && !truthy(v)) ? dflt : v;
    }
    if (v.undefined && f != "string")
      fail(e.line, absl::StrCat("filter '", f, "' of an undefined value"));
    if (f == "length" || f == "count") {
      if (d.is_string())
        return Value(
            static_cast<int64_t>(codePoints(d.get<std::string>()).size()));
      if (d.is_array() || d.is_object())
        return Value(static_cast<int64_t>(d.size()));
      fail(e.line, "length of a value without one");
    }
    if (f == "trim") {
      Value chars = a(0, "chars");
      return Value(
          pyStrip(pyStr(v), chars.undefined ? nullptr : &chars, true, true));
    }
    if (f == "tojson") {
      Value indent = a(0, "indent", json(nullptr));
      std::string out;
      if (truthy(a(1, "sort_keys", json(false)))) {
        // Python's sort_keys: every object's keys in order, recursively.
        std::function<json(const json &)> sorted = [&](const json &x) {
          if (x.is_array()) {
            json o = json::array();
            for (const json &y : x)
              o.push_back(sorted(y));
            return o;
          }
          if (!x.is_object())
            return x;
          std::vector<std::string> keys;
          for (auto it = x.begin(); it != x.end(); ++it)
            keys.push_back(it.key());
          std::sort(keys.begin(), keys.end());
          json o = json::object();
          for (const std::string &k : keys)
            o[k] = sorted(x[k]);
          return o;
        };
        pyJson(sorted(d),
               indent.data().is_null()
                   ? -1
                   : static_cast<int>(integer(indent.data())),
               0, out);
        return Value(out);
      }
      pyJson(d,
             indent.data().is_null() ? -1
                                     : static_cast<int>(integer(indent.data())),
             0, out);
      return Value(out);
    }
    if (f == "string" || f == "safe")
      return Value(pyStr(v));
    if (f == "e" || f == "escape") {
      // markupsafe's escape.
      std::string out;
      for (char c : pyStr(v)) {
        switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&#34;";
          break;
        case '\'':
          out += "&#39;";
          break;
        default:
          out += c;
        }
      }
      return Value(out);
    }
    if (f == "upper" || f == "lower") {
      std::string s = pyStr(v);
      if (f == "lower")
        return Value(lowercase(s));
      return Value(mapCase(s, Case::Upper));
    }
    if (f == "capitalize" || f == "title")
      return Value(mapCase(pyStr(v),
                           f == "title" ? Case::JinjaTitle : Case::Capitalize));
    if (f == "first" || f == "last") {
      if (d.is_array() && !d.empty())
        return Value(f == "first" ? d.front() : d.back());
      if (d.is_string() && !d.get<std::string>().empty()) {
        auto cps = codePoints(d.get<std::string>());
        return Value(f == "first"
                         ? fromCodePoints(cps, 0, 1)
                         : fromCodePoints(cps, cps.size() - 1, cps.size()));
      }
      return Value::undef();
    }
    if (f == "join") {
      const std::string sep = pyStr(a(0, "d", json("")));
      if (!d.is_array())
        fail(e.line, "join of a value that is not a list");
      std::string out;
      for (size_t i = 0; i < d.size(); ++i)
        out += (i ? sep : "") + pyStr(Value(d[i]));
      return Value(out);
    }
    if (f == "list") {
      if (d.is_array())
        return v;
      if (d.is_string()) {
        json out = json::array();
        for (char32_t c : codePoints(d.get<std::string>())) {
          std::string s;
          appendUtf8(s, c);
          out.push_back(s);
        }
        return Value(out);
      }
      if (d.is_object()) {
        json out = json::array();
        for (auto it = d.begin(); it != d.end(); ++it)
          out.push_back(it.key());
        return Value(out);
      }
      fail(e.line, "list of a value that is not iterable");
    }
    if (f == "items") {
      if (!d.is_object())
        fail(e.line, "items of a value that is not a mapping");
      json out = json::array();
      for (auto it = d.begin(); it != d.end(); ++it)
        out.push_back(json::array({it.key(), it.value()}));
      return Value(out);
    }
    if (f == "replace")
      return Value(
          replaceAll(pyStr(v), pyStr(a(0, "old")), pyStr(a(1, "new")), e.line));
    if (f == "int") {
      if (d.is_number())
        return Value(static_cast<int64_t>(d.get<double>()));
      if (d.is_string()) {
        try {
          return Value(static_cast<int64_t>(std::stoll(d.get<std::string>())));
        } catch (...) {
          return Value(int64_t{0});
        }
      }
      return Value(int64_t{0});
    }
    if (f == "float") {
      if (d.is_number())
        return Value(d.get<double>());
      double x = 0;
      if (d.is_string()) {
        const std::string t =
            pyStrip(d.get<std::string>(), nullptr, true, true);
        auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), x);
        if (ec != std::errc() || end != t.data() + t.size())
          x = 0;
      }
      return Value(x);
    }
    if (f == "abs")
      return isInt(d) ? Value(std::abs(integer(d)))
                      : Value(std::fabs(number(v, e.line)));
    if (f == "reverse") {
      if (d.is_array()) {
        json out = json::array();
        for (auto it = d.rbegin(); it != d.rend(); ++it)
          out.push_back(*it);
        return Value(out);
      }
      auto cps = codePoints(pyStr(v));
      std::reverse(cps.begin(), cps.end());
      return Value(fromCodePoints(cps, 0, cps.size()));
    }
    fail(e.line, absl::StrCat("filter '", f, "' is not supported"));
  }

  Value method(const Value &self, const std::string &name, const Expr &call) {
    const json &d = self.data();
    if (d.is_string()) {
      const std::string s = d.get<std::string>();
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        Value chars = arg(call, 1, "chars");
        return Value(pyStrip(
            s, chars.undefined || chars.data().is_null() ? nullptr : &chars,
            name != "rstrip", name != "lstrip"));
      }
      if (name == "split") {
        Value sep = arg(call, 1, "sep", json(nullptr));
        const int64_t maxsplit =
            integer(arg(call, 2, "maxsplit", json(-1)).data());
        json out = json::array();
        if (sep.data().is_null()) {
          auto cps = codePoints(s);
          size_t i = 0;
          int64_t splits = 0;
          while (i < cps.size()) {
            while (i < cps.size() && isPySpace(cps[i]))
              ++i;
            if (i >= cps.size())
              break;
            size_t j = i;
            if (maxsplit >= 0 && splits >= maxsplit) {
              size_t end = cps.size();
              while (end > i && isPySpace(cps[end - 1]))
                --end;
              out.push_back(fromCodePoints(cps, i, end));
              break;
            }
            while (j < cps.size() && !isPySpace(cps[j]))
              ++j;
            out.push_back(fromCodePoints(cps, i, j));
            ++splits;
            i = j;
          }
          return Value(out);
        }
        const std::string sp = pyStr(sep);
        if (sp.empty())
          fail(call.line, "empty separator");
        size_t at = 0, hit;
        int64_t splits = 0;
        while ((maxsplit < 0 || splits < maxsplit) &&
               (hit = s.find(sp, at)) != std::string::npos) {
          out.push_back(s.substr(at, hit - at));
          at = hit + sp.size();
          ++splits;
        }
        out.push_back(s.substr(at));
        return Value(out);
      }
      if (name == "startswith" || name == "endswith") {
        Value p = arg(call, 1, "prefix");
        std::vector<std::string> options;
        if (p.data().is_array())
          for (const json &o : p.data())
            options.push_back(pyStr(Value(o)));
        else
          options.push_back(pyStr(p));
        for (const std::string &o : options) {
          if (name == "startswith"
                  ? s.compare(0, o.size(), o) == 0
                  : (s.size() >= o.size() &&
                     s.compare(s.size() - o.size(), o.size(), o) == 0))
            return Value(true);
        }
        return Value(false);
      }
      if (name == "upper" || name == "lower" || name == "title" ||
          name == "capitalize" || name == "replace") {
        return stringFilter(Value(s), name, call);
      }
      if (name == "find") {
        const size_t at = s.find(pyStr(arg(call, 1, "sub")));
        return Value(
            at == std::string::npos
                ? int64_t{-1}
                : static_cast<int64_t>(codePoints(s.substr(0, at)).size()));
      }
      if (name == "count") {
        const std::string sub = pyStr(arg(call, 1, "sub"));
        int64_t n = 0;
        for (size_t at = 0;
             !sub.empty() && (at = s.find(sub, at)) != std::string::npos;
             at += sub.size())
          ++n;
        return Value(n);
      }
    }
    if (d.is_object() || self.ns) {
      if (name == "get") {
        Value key = arg(call, 1, "key");
        auto it = d.find(pyStr(key));
        if (it != d.end())
          return Value(*it);
        return arg(call, 2, "default", json(nullptr));
      }
      if (name == "items" || name == "keys" || name == "values") {
        json out = json::array();
        for (auto it = d.begin(); it != d.end(); ++it)
          out.push_back(name == "items"  ? json::array({it.key(), it.value()})
                        : name == "keys" ? json(it.key())
                                         : it.value());
        return Value(out);
      }
    }
    fail(call.line, absl::StrCat("method '", name, "' of ", pyRepr(d),
                                 " is not supported"));
  }

  Value stringFilter(const Value &subject, const std::string &name,
                     const Expr &call) {
    std::string s = pyStr(subject);
    if (name == "lower")
      return Value(lowercase(s));
    if (name == "upper")
      return Value(mapCase(s, Case::Upper));
    if (name == "replace")
      return Value(replaceAll(s, pyStr(arg(call, 1, "old")),
                              pyStr(arg(call, 2, "new")), call.line));
    return Value(
        mapCase(s, name == "title" ? Case::PyTitle : Case::Capitalize));
  }

  Value call(const Expr &e) {
    const Expr &callee = *e.args[0];
    if (callee.kind == Expr::Attr) {
      Value self = eval(*callee.args[0]);
      if (self.undefined)
        fail(e.line, absl::StrCat("'", callee.name, "' of an undefined value"));
      return method(self, callee.name, e);
    }
    if (callee.kind != Expr::Name)
      fail(e.line, "only functions and methods can be called");
    const std::string &fn = callee.name;
    if (fn == "raise_exception")
      throw TemplateError{pyStr(arg(e, 1, "message"))};
    if (fn == "namespace") {
      Value ns;
      ns.ns = std::make_shared<json>(json::object());
      for (const auto &[k, v] : e.kwargs)
        (*ns.ns)[k] = eval(*v).data();
      return ns;
    }
    if (fn == "range") {
      std::vector<int64_t> a;
      for (size_t i = 1; i < e.args.size(); ++i) {
        Value v = eval(*e.args[i]);
        if (!isInt(v.data()))
          fail(e.line, "range() takes integers");
        a.push_back(integer(v.data()));
      }
      if (a.empty() || a.size() > 3)
        fail(e.line, "range() takes 1 to 3 integers");
      const int64_t start = a.size() > 1 ? a[0] : 0,
                    stop = a.size() > 1 ? a[1] : a[0],
                    step = a.size() > 2 ? a[2] : 1;
      if (step == 0)
        fail(e.line, "range() step cannot be zero");
      // At most 100000 items, as the sandbox transformers renders in.
      json out = json::array();
      for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
        if (out.size() >= 100000)
          fail(e.line, "range() of more than 100000 items");
        out.push_back(i);
        if (__builtin_add_overflow(i, step, &i))
          break;
      }
      return Value(out);
    }
    if (fn == "strftime_now") {
      const std::string fmt = pyStr(arg(e, 1, "format"));
      std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
      return Value(std::string(buf, n));
    }
    fail(e.line, absl::StrCat("function '", fn, "' is not supported"));
  }

public:
  Value eval(const Expr &e) {
    switch (e.kind) {
    case Expr::Literal:
      return Value(e.value);
    case Expr::Name:
      if (e.name == "\x01undefined")
        return Value::undef();
      return lookup(e.name, e.line);
    case Expr::List: {
      json out = json::array();
      for (const auto &a : e.args)
        out.push_back(eval(*a).data());
      return Value(out);
    }
    case Expr::Dict: {
      json out = json::object();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2)
        out[pyStr(eval(*e.args[i]))] = eval(*e.args[i + 1]).data();
      return Value(out);
    }
    case Expr::Attr:
      return attribute(eval(*e.args[0]), e.name, e.line);
    case Expr::Index:
      return index(eval(*e.args[0]), eval(*e.args[1]), e.line);
    case Expr::Slice:
      return slice(eval(*e.args[0]), e);
    case Expr::Call:
      return call(e);
    case Expr::Filter:
      return filter(e);
    case Expr::Test:
      return test(e);
    case Expr::Unary: {
      Value v = eval(*e.args[0]);
      if (isInt(v.data()))
        return Value(e.name == "-" ? -integer(v.data()) : integer(v.data()));
      const double x = number(v, e.line);
      return Value(e.name == "-" ? -x : x);
    }
    case Expr::Binary:
      return binary(e);
    case Expr::And: {
      Value a = eval(*e.args[0]);
      return truthy(a) ? eval(*e.args[1]) : a;
    }
    case Expr::Or: {
      Value a = eval(*e.args[0]);
      return truthy(a) ? a : eval(*e.args[1]);
    }
    case Expr::Not:
      return Value(!truthy(eval(*e.args[0])));
    case Expr::Cond:
      return truthy(eval(*e.args[1])) ? eval(*e.args[0]) : eval(*e.args[2]);
    }
    return Value::undef();
  }

private:
  std::vector<std::map<std::string, Value>> scopes;
};

} // namespace

ChatTemplate::ChatTemplate() = default;
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>>
ChatTemplate::parse(std::string_view source) {
  try {
    std::unique_ptr<ChatTemplate> t(new ChatTemplate());
    // Jinja reads \r\n and \r as \n, and drops one newline at the
    // template's end (keep_trailing_newline is off in transformers).
    std::string text;
    text.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        text += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n')
          ++i;
      } else {
        text += source[i];
      }
    }
    if (!text.empty() && text.back() == '\n')
      text.pop_back();
    t->root = StatementParser(lexTemplate(text)).parseAll();
    return t;
  } catch (const TemplateError &e) {
    return absl::InvalidArgumentError(e.message);
  } catch (const std::exception &e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<ChatTemplate>>
ChatTemplate::fromTokenizerConfig(const nlohmann::ordered_json &config) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null())
    return absl::NotFoundError("tokenizer_config.json has no chat_template");
  if (it->is_string())
    return parse(it->get<std::string>());
  if (it->is_array())
    for (const json &entry : *it)
      if (entry.is_object() && entry.value("name", "") == "default" &&
          entry.contains("template") && entry["template"].is_string())
        return parse(entry["template"].get<std::string>());
  return absl::InvalidArgumentError(
      "tokenizer_config.json: chat_template is neither a string nor a list "
      "with a \"default\" entry");
}

absl::StatusOr<std::string>
ChatTemplate::render(const nlohmann::ordered_json &context) const {
  if (!context.is_object())
    return absl::InvalidArgumentError("the context must be a JSON object");
  try {
    Renderer r(context);
    std::string out;
    r.run(*root, out);
    return out;
  } catch (const TemplateError &e) {
    return absl::InvalidArgumentError(e.message);
  } catch (const LoopSignal &) {
    return absl::InvalidArgumentError(
        "chat template: break or continue outside a loop");
  } catch (const std::exception &e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: ", e.what()));
  }
}

} // namespace ds::tok
