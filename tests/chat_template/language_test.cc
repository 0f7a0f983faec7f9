// Unit tests of the chat-template language: whitespace control and trim/lstrip
// blocks, literals and operators with Python semantics, every statement (if, for
// with loop.* / else / inline if / recursive, set and block set, namespace, macro,
// call, filter, with, break/continue, generation), Undefined behaviour, Python-style
// printing of values, and errors with line:column. Each expectation was checked
// against jinja2 3.1 configured as transformers configures it.
#include <thread>
#include <vector>

#include "tests/chat_template/case_table.h"

namespace krasis::chat_template_test {
namespace {

const Case kWhitespace[] = {
    {"trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", "{}", "yes\nafter"},
    {"lstrip_blocks", "  {% if true %}\n  yes\n  {% endif %}\nend", "{}", "  yes\nend"},
    {"lstrip_not_for_variables", "  {{ 'x' }}\n", "{}", "  x"},
    {"lstrip_only_whitespace_lines", "a {% if true %}b{% endif %}", "{}", "a b"},
    {"minus_strips_both_sides", "x \n {{- 'a' -}} \n y", "{}", "xay"},
    {"minus_in_blocks", "a\n  {%- if true -%}\n  b\n  {%- endif -%}\n  c", "{}", "abc"},
    {"plus_keeps_lstrip", "  {%+ if true %}x{% endif %}", "{}", "  x"},
    {"plus_keeps_newline", "{% if true +%}\nx{% endif %}", "{}", "\nx"},
    {"comments", "a{# comment #}b\n  {# line comment #}\nc", "{}", "ab\nc"},
    {"comment_minus", "a  {#- c -#}  b", "{}", "ab"},
    {"raw", "{% raw %}{{ x }}{% if %}{% endraw %}", "{}", "{{ x }}{% if %}"},
    {"raw_minus", "a  {%- raw -%}  {{ y }}  {%- endraw -%}  b", "{}", "a{{ y }}b"},
    {"one_trailing_newline_dropped", "a\n\n", "{}", "a\n"},
    {"newlines_normalised", "a\r\nb\rc", "{}", "a\nb\nc"},
    {"set_line_vanishes", "{% set x = 1 %}\n{{ x }}\n", "{}", "1"},
};

const Case kLiterals[] = {
    {"string_escapes", R"~({{ 'a\nb\t\'q\' \"d\" \\ \x41\u00e9\U0001F600 \d' }})~", "{}",
     "a\nb\t'q' \"d\" \\ A\u00e9\U0001F600 \\d"},
    {"adjacent_strings", R"~({{ 'a' "b" 'c' }})~", "{}", "abc"},
    {"numbers", "{{ 42 }} {{ 1_000 }} {{ 1.5 }} {{ 1e3 }} {{ 2.5E-3 }} {{ 0x1F }} {{ 0b101 }}", "{}",
     "42 1000 1.5 1000.0 0.0025 31 5"},
    {"constants", "{{ true }} {{ True }} {{ false }} {{ none }} {{ None }}", "{}",
     "True True False None None"},
    {"list_dict_tuple", R"~({{ [1, 'a', none, true, 1.5] }} {{ {'a': 1, 'b': [2]} }} {{ (1,) }} {{ (1, 2) }} {{ () }})~",
     "{}", "[1, 'a', None, True, 1.5] {'a': 1, 'b': [2]} (1,) (1, 2) ()"},
    {"trailing_commas", "{{ [1, 2,] }} {{ {'a': 1,} }}", "{}", "[1, 2] {'a': 1}"},
    {"print_tuple", "{{ 1, 'a' }}", "{}", "(1, 'a')"},
};

const Case kOperators[] = {
    {"arithmetic", "{{ 1 + 2 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}",
     "{}", "3 3.5 3 -4 1 2 1024 0.5"},
    {"float_arithmetic", "{{ 1.5 * 2 }} {{ 10 / 5 }} {{ 0.1 + 0.2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 2 ** 0.5 }}",
     "{}", "3.0 2.0 0.30000000000000004 3.0 0.5 1.4142135623730951"},
    {"float_floor_division", "{{ 3 // 0.1 }} {{ -7 // 2.0 }} {{ 7.5 % -2 }} {{ 1 % 0.3 }}", "{}", "29.0 -4.0 -0.5 0.10000000000000003"},
    {"percent_with_mapping_like_args", "{{ 'x' % [] }} {{ 'x' % missing }} {{ '%s' % [1] }} {{ '%s|%s' % (1, 'a') }}", "{}", "x x [1] 1|a"},
    {"bool_is_int", "{{ true + 1 }} {{ true * 3 }} {{ -true }} {{ false + 0.5 }}", "{}", "2 3 -1 0.5"},
    {"pow_left_assoc", "{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }}", "{}", "64 4"},
    {"precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 1 + 1 is odd }} {{ -3|abs }} {{ not 1 == 2 }}", "{}",
     "7 9 2 3 True"},
    {"concat", "{{ 1 ~ 'a' ~ none ~ true ~ 1.0 ~ missing }}", "{}", "1aNoneTrue1.0"},
    {"string_and_list_ops", "{{ 'ab' + 'cd' }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ [1] + [2] }} {{ (1,) + (2,) }} {{ 2 * 'x' }}",
     "{}", "abcd ababab [0, 0] [1, 2] (1, 2) xx"},
    {"comparisons", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 1 == true }} {{ 'a' != 'b' }} {{ 'abc' < 'abd' }} {{ [1, 2] < [1, 3] }} {{ 2 >= 2 }} {{ 'a' == 1 }}",
     "{}", "True False True True True True True True False"},
    {"dict_equality_ignores_order", "{{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }} {{ [1, 2] == (1, 2) }}", "{}",
     "True False"},
    {"and_or_return_operands", "[{{ 0 or 'x' }}] [{{ 'a' and 'b' }}] [{{ '' and 'b' }}] [{{ none or [] }}] {{ not 0 }} {{ not 'a' }}",
     "{}", "[x] [b] [] [[]] True False"},
    {"membership", "{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'x' not in 'xyz' }} {{ 1 in (1, 2) }}",
     "{}", "True True True True False True"},
    {"conditional_expression", "{{ 'y' if 1 else 'n' }} {{ 'y' if 0 else 'n' }} [{{ 'y' if 0 }}] {{ 'a' if false else 'b' if true else 'c' }}",
     "{}", "y n [] b"},
    {"attribute_and_item", "{{ d.a.b[1] }} {{ d['a']['b'][-1] }} {{ d.a.b.0 }} {{ d.a['b'][0] }}",
     R"~({"d": {"a": {"b": [10, 20, 30]}}})~", "20 30 10 10"},
    {"slicing", "{{ [1, 2, 3, 4][::-1] }} {{ 'hello'[1:3] }} {{ 'hello'[::2] }} {{ [1, 2, 3, 4][-2:] }} {{ 'héllo'[::-1] }} {{ [1, 2, 3][5:] }} {{ (1, 2, 3)[:2] }} {{ 'abcdef'[-1:0:-2] }}",
     "{}", "[4, 3, 2, 1] el hlo [3, 4] olléh [] (1, 2) fdb"},
    {"negative_index", "{{ 'abc'[-1] }} {{ [1, 2][-2] }}", "{}", "c 1"},
    {"call_kwargs_and_star", "{{ dict(a=1, **{'b': 2}) }} {{ range(*[1, 4])|list }}", "{}",
     "{'a': 1, 'b': 2} [1, 2, 3]"},
    {"filter_chain_with_args", "{{ 'a,b' | replace(',', ';') | upper }}", "{}", "A;B"},
};

const Case kStatements[] = {
    {"if_elif_else",
     "{% for x in [0, 1, 2] %}{% if x > 1 %}big{% elif x == 1 %}one{% else %}small{% endif %} {% endfor %}", "{}",
     "small one big "},
    {"if_scope_is_shared", "{% if true %}{% set y = 5 %}{% endif %}{{ y }}", "{}", "5"},
    {"set_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set (c, d) = 'xy' %}{{ c }}{{ d }}", "{}", "12xy"},
    {"block_set", "{% set x %}Hello {{ 'World' }}{% endset %}[{{ x }}]", "{}", "[Hello World]"},
    {"block_set_filter", "{% set x | upper | replace('B', '-') %}abc{% endset %}{{ x }}", "{}", "A-C"},
    {"namespace", "{% set ns = namespace(x=1, found=false) %}{% for i in [1, 2, 3] %}{% set ns.x = ns.x + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.x }} {{ ns.found }}",
     "{}", "7 True"},
    {"namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }} {{ ns }}", "{}",
     "12 <Namespace {'a': 1, 'b': 2}>"},
    {"filter_block", "{% filter upper %}hello {{ 'x' }}{% endfilter %}", "{}", "HELLO X"},
    {"with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", "{}", "3[]"},
    {"generation_tag", "{% generation %}gen {{ 1 }}{% endgeneration %}", "{}", "gen 1"},
    {"print_statement", "{% print 'x', 1 %}{% print (2, 3) %}", "{}", "x1(2, 3)"},
    {"macro_defaults_and_kwargs",
     "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }} {{ greet(name='Cy', greeting='Yo') }}",
     "{}", "Hello, Ann! Hi, Bob! Yo, Cy!"},
    {"macro_varargs_kwargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}", "{}",
     "1(2, 3){'k': 4}"},
    {"macro_missing_param", "{% macro m(a, b) %}[{{ a }}][{{ b }}]{% endmacro %}{{ m(1) }}", "{}", "[1][]"},
    {"macro_default_sees_earlier_param", "{% macro m(a, b=a * 2) %}{{ b }}{% endmacro %}{{ m(3) }}", "{}", "6"},
    {"macro_recursion", "{% macro f(n) %}{% if n <= 1 %}1{% else %}{{ n * f(n - 1)|int }}{% endif %}{% endmacro %}{{ f(5) }}",
     "{}", "120"},
    {"macro_sees_globals", "{% macro m() %}{{ g }}{% endmacro %}{% set g = 'late' %}{{ m() }}", "{}", "late"},
    {"call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold{% endcall %}",
     "{}", "<b>bold</b>"},
    {"call_block_args", "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}<{{ x }}>{% endcall %}",
     "{}", "<1><2>"},
    {"globals", "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b=2) }} {{ dict([('x', 1)]) }}",
     "{}", "[0, 1, 2] [1, 4, 7] [5, 3, 1] {'a': 1, 'b': 2} {'x': 1}"},
    {"cycler_joiner", "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}{{ c.current }} {% set j = joiner('|') %}{% for x in [1, 2, 3] %}{{ j() }}{{ x }}{% endfor %}",
     "{}", "abab 1|2|3"},
};

const Case kLoops[] = {
    {"loop_variables",
     "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.depth }}|{% endfor %}",
     "{}", "1032TrueFalse31|2121FalseFalse31|3210FalseTrue31|"},
    {"previtem_nextitem", "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %}", "{}", "-2,1-3,2-,"},
    {"cycle", "{% for x in range(5) %}{{ loop.cycle('a', 'b') }}{% endfor %}", "{}", "ababa"},
    {"changed", "{% for x in [1, 1, 2, 2, 3] %}{% if loop.changed(x) %}{{ x }}{% endif %}{% endfor %}", "{}", "123"},
    {"for_else", "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in [1] %}{{ x }}{% else %}no{% endfor %}", "{}",
     "empty1"},
    {"inline_if", "{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }},{% endfor %}", "{}", "15,35,55,75,95,"},
    {"inline_if_else", "{% for x in [1, 2] if x > 5 %}{{ x }}{% else %}none{% endfor %}", "{}", "none"},
    {"dict_iteration", "{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %} {% for k, v in {'b': 1, 'a': 2}.items() %}{{ k }}={{ v }};{% endfor %} {% for k, v in {'x': 0}|items %}{{ k }}{{ v }}{% endfor %}",
     "{}", "ba b=1;a=2; x0"},
    {"unpacking", "{% for a, b in [[1, 2], (3, 4), 'xy'] %}{{ a }}{{ b }}{% endfor %}", "{}", "1234xy"},
    {"string_iteration", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}", "{}", "[h][é][l][l][o]"},
    {"nested_outer_loop", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in [1, 2] %}{{ outer.index }}{{ loop.index }} {% endfor %}{% endfor %}",
     "{}", "11 12 21 22 "},
    {"break_continue", "{% for x in range(10) %}{% if x == 5 %}{% break %}{% endif %}{% if x is even %}{% continue %}{% endif %}{{ x }}{% endfor %}",
     "{}", "13"},
    {"loop_scoping", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }};{% endfor %}{{ x }}", "{}",
     "111;111;1"},
    {"loop_var_does_not_leak", "{% for i in [1, 2] %}{% endfor %}[{{ i }}]", "{}", "[]"},
    {"recursive_loop",
     "{% for item in tree recursive %}{{ item.name }}{{ loop.depth }}{% if item.children %}({{ loop(item.children) }}){% endif %}{% endfor %}",
     R"~({"tree": [{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}, {"name": "d"}]}, {"name": "e"}]})~",
     "a1(b2(c3)d2)e1"},
    {"iterate_undefined", "{% for x in missing %}x{% else %}none{% endfor %}", "{}", "none"},
    {"reversed_messages_idiom",
     "{% for m in messages[::-1] %}{% set index = (messages|length - 1) - loop.index0 %}{{ index }}{{ m.role }} {% endfor %}",
     R"~({"messages": [{"role": "user"}, {"role": "assistant"}]})~", "1assistant 0user "},
};

const Case kUndefined[] = {
    {"prints_empty", "[{{ y }}][{{ d.missing }}][{{ d['missing'] }}][{{ l[10] }}][{{ none.x }}][{{ 'abc'.nope }}]",
     R"~({"d": {}, "l": []})~", "[][][][][][]"},
    {"operations", "{{ y|length }} {{ y|default('d') }} {{ y ~ 'x' }} {{ y == y }} {{ y == none }} {{ not y }} {{ 'a' in y }}{% for i in y %}x{% endfor %}",
     "{}", "0 d x True False True False"},
    {"tests", "{{ y is defined }} {{ y is undefined }} {{ y is none }} {{ y is iterable }} {{ y is sequence }} {{ y is string }} {{ d.k is defined }}",
     R"~({"d": {"k": null}})~", "False True False True True False True"},
    {"string_filters_see_empty", "[{{ y|trim }}][{{ y|upper }}][{{ y|string }}][{{ y|join(',') }}][{{ y|list }}]", "{}",
     "[][][][][[]]"},
    {"dict_methods_win_over_keys", "{{ d.items is defined }} {{ d['items'] }} {{ d.get('items') }}",
     R"~({"d": {"items": 5}})~", "True 5 5"},
    {"unsafe_attribute_prints_empty", "[{{ ''.__class__ }}][{{ [].append }}]", "{}", "[][]"},
    {"attribute_falls_back_to_key", "{{ d.role }} {{ d._hidden }} {{ d['role'] }}", R"~({"d": {"role": "user", "_hidden": 1}})~",
     "user 1 user"},
};

const Case kPrinting[] = {
    {"floats", "{{ 1.0 }} {{ 1e16 }} {{ 1.5e-7 }} {{ 123456789.123 }} {{ 0.1 }} {{ -0.0 }} {{ 1e15 }} {{ 100.0 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1/3 }}",
     "{}", "1.0 1e+16 1.5e-07 123456789.123 0.1 -0.0 1000000000000000.0 100.0 0.0001 1e-05 0.3333333333333333"},
    {"context_numbers", "{{ a }} {{ b }} {{ c }} {{ d }} {{ e }}", R"~({"a": 12345678901234, "b": 2.50, "c": -7, "d": 1e-7, "e": 3.0})~",
     "12345678901234 2.5 -7 1e-07 3.0"},
    {"nested_repr", "{{ {'k': [1, 'two', none, true, {'x': 1.5}]} }}", "{}", "{'k': [1, 'two', None, True, {'x': 1.5}]}"},
    {"string_repr_quotes",
     R"~({{ ["a'b", 'a"b', 'a\'"b', 'tab\there', 'nl\nhere', 'é', '\u200b', '\x7f', 'back\\slash'] }})~", "{}",
     R"~(["a'b", 'a"b', 'a\'"b', 'tab\there', 'nl\nhere', 'é', '\u200b', '\x7f', 'back\\slash'])~"},
    {"context_dict_order", "{{ d }} {{ d|list }}", R"~({"d": {"z": 1, "a": {"y": [true, null]}}})~",
     "{'z': 1, 'a': {'y': [True, None]}} ['z', 'a']"},
    {"tuple_and_items", "{{ d.items()|list }} {{ (1,) }}", R"~({"d": {"a": 1}})~", "[('a', 1)] (1,)"},
};

const ErrorCase kErrors[] = {
    {"stray_end_tag", "{% for x in [1] %}{% endif %}", "{}", "chat_template:1:22: unexpected token 'endif'"},
    {"stray_end_tag_line_2", "line one\n  {% endfor %}", "{}", "chat_template:2:6: unexpected token 'endfor'"},
    {"missing_end", "{% if x %}\nbody", "{}", "chat_template:2:5: unexpected end of template"},
    {"bad_expression", "{{ 1 + }}", "{}", "chat_template:1:8: unexpected 'end of print statement'"},
    {"unclosed_print", "{{ x ", "{}", "expected 'end of print statement'"},
    {"unknown_filter", "\n{{ x|nosuchfilter }}", "{}", "chat_template:2:6: no filter named 'nosuchfilter'"},
    {"unknown_test", "{{ x is nosuchtest }}", "{}", "no test named 'nosuchtest'"},
    {"unknown_tag", "{% frobnicate %}", "{}", "unexpected token 'frobnicate'"},
    {"unbalanced", "{{ (1 }}", "{}", "unexpected '}'"},
    {"comment_unclosed", "{# never closed", "{}", "Missing end of comment tag"},
    {"attribute_of_undefined", "a\nb\n  {{ y.z }}", "{}", "chat_template:3:7: 'y' is undefined"},
    {"attribute_of_missing_key", "{{ d.missing.x }}", R"~({"d": {}})~", "'dict object' has no attribute 'missing'"},
    {"call_undefined", "{{ 'abc'.foo() }}", "{}", "'str object' has no attribute 'foo'"},
    {"undefined_arithmetic", "{{ y + 1 }}", "{}", "'y' is undefined"},
    {"str_plus_int", "{{ 'a' + 1 }}", "{}", "can only concatenate str (not \"int\") to str"},
    {"int_plus_str", "{{ 1 + 'a' }}", "{}", "unsupported operand type(s) for +: 'int' and 'str'"},
    {"division_by_zero", "{{ 1 / 0 }}", "{}", "division by zero"},
    {"unorderable", "{{ 1 < 'a' }}", "{}", "'<' not supported between instances of 'int' and 'str'"},
    {"not_iterable", "{% for x in 5 %}{% endfor %}", "{}", "'int' object is not iterable"},
    {"unpack", "{% for a, b in [1] %}{% endfor %}", "{}", "cannot unpack non-iterable int object"},
    {"unpack_count", "{% set a, b = [1, 2, 3] %}", "{}", "too many values to unpack (expected 2)"},
    {"non_namespace_attr", "{% set x = 1 %}{% set x.y = 2 %}", "{}", "cannot assign attribute on non-namespace object"},
    {"immutable_list", "{{ [1].append(2) }}", "{}", "access to attribute 'append' of 'list' object is unsafe."},
    {"immutable_dict", "{{ {}.update({'a': 1}) }}", "{}", "access to attribute 'update' of 'dict' object is unsafe."},
    {"private_attribute", "{{ ''.__class__.__mro__ }}", "{}",
     "access to attribute '__class__' of 'str' object is unsafe."},
    {"range_limit", "{{ range(200000)|length }}", "{}", "Range too big"},
    {"slice_step_zero", "{{ 'abc'[::0] }}", "{}", "slice step cannot be zero"},
    {"too_many_macro_args", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", "{}", "macro 'm' takes not more than 1 argument(s)"},
    {"unknown_macro_kwarg", "{% macro m(a) %}{% endmacro %}{{ m(b=1) }}", "{}", "macro 'm' takes no keyword argument 'b'"},
    {"not_callable", "{{ 'abc'() }}", "{}", "'str' object is not callable"},
    {"infinite_recursion", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{}", "maximum recursion depth exceeded"},
    {"tojson_undefined", "{{ y|tojson }}", "{}", "Object of type Undefined is not JSON serializable"},
    {"items_of_list", "{{ [1]|items|list }}", "{}", "Can only get item pairs from a mapping."},
    {"unhashable_key", "{{ {[1]: 2} }}", "{}", "unhashable type: 'list'"},
    {"in_int", "{{ 1 in 2 }}", "{}", "argument of type 'int' is not iterable"},
    {"str_in_requires_str", "{{ 1 in 'abc' }}", "{}", "'in <string>' requires string as left operand, not int"},
};

TEST(ChatTemplateLanguageTest, Whitespace) { RunCases(kWhitespace); }
TEST(ChatTemplateLanguageTest, Literals) { RunCases(kLiterals); }
TEST(ChatTemplateLanguageTest, Operators) { RunCases(kOperators); }
TEST(ChatTemplateLanguageTest, Statements) { RunCases(kStatements); }
TEST(ChatTemplateLanguageTest, Loops) { RunCases(kLoops); }
TEST(ChatTemplateLanguageTest, Undefined) { RunCases(kUndefined); }
TEST(ChatTemplateLanguageTest, Printing) { RunCases(kPrinting); }
TEST(ChatTemplateLanguageTest, Errors) { RunErrorCases(kErrors); }

TEST(ChatTemplateLanguageTest, RaiseExceptionMessageIsReturnedAsIs) {
  auto out = RenderSource("line\n{{ raise_exception('Conversation roles must alternate, got ' ~ r) }}",
                          R"({"r": "tool"})");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Conversation roles must alternate, got tool");
}

TEST(ChatTemplateLanguageTest, ErrorsNameTheTemplate) {
  auto tpl = ChatTemplate::Parse("ok\n{% endfor %}", "qwen3.jinja");
  ASSERT_FALSE(tpl.ok());
  EXPECT_EQ(tpl.status().message(), "qwen3.jinja:2:4: unexpected token 'endfor'");
}

TEST(ChatTemplateLanguageTest, StrftimeNow) {
  char year[8];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::strftime(year, sizeof(year), "%Y", &tm);
  auto out = RenderSource("{{ strftime_now('%Y') }}|{{ strftime_now('%d %B %Y')|length > 8 }}", "{}");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, std::string(year) + "|True");
}

TEST(ChatTemplateLanguageTest, ContextMustBeAnObject) {
  auto tpl = ChatTemplate::Parse("x");
  ASSERT_TRUE(tpl.ok());
  EXPECT_FALSE(tpl->Render(nlohmann::ordered_json::array()).ok());
  auto plain = tpl->Render(nlohmann::json{{"a", 1}});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, "x");
}

TEST(ChatTemplateLanguageTest, RenderIsThreadSafe) {
  auto tpl = ChatTemplate::Parse(
      "{% set ns = namespace(n=0) %}{% macro m(x) %}<{{ x }}>{% endmacro %}"
      "{% for i in range(200) %}{% set ns.n = ns.n + i %}{{ m(i) if i % 50 == 0 }}{% endfor %}{{ ns.n }}");
  ASSERT_TRUE(tpl.ok()) << tpl.status();
  std::vector<std::string> outs(8);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < outs.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k) outs[t] = tpl->Render(nlohmann::ordered_json::object()).value();
    });
  }
  for (auto& th : threads) th.join();
  for (const std::string& o : outs) EXPECT_EQ(o, "<0><50><100><150>19900");
}

}  // namespace
}  // namespace krasis::chat_template_test
