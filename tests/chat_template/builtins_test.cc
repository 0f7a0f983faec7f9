// Unit tests of the chat-template builtins: every filter (including transformers'
// tojson with indent / separators / sort_keys / ensure_ascii), every test, and the
// Python str / list / dict methods templates call, with CPython's exact results.
// Each expectation was checked against jinja2 3.1 configured as transformers
// configures it.
#include "tests/chat_template/case_table.h"

namespace krasis::chat_template_test {
namespace {

constexpr const char* kUsers =
    R"~({"users": [{"name": "al", "age": 30, "admin": true}, {"name": "bo", "age": 25, "admin": false}, {"name": "cy", "age": 35}]})~";

const Case kStringMethods[] = {
    {"strip", R"~({{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  x'.lstrip() }}|{{ 'x\n\n'.rstrip('\n') }}|{{ '\u3000x\t'.strip() }}|)~",
     "{}", "x|a|x|x|x|"},
    {"split", R"~({{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }} {{ 'a b c'.rsplit(None, 1) }} {{ 'a\nb\r\nc'.splitlines() }} {{ 'x'.split('x') }})~",
     "{}", "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a b', 'c'] ['a b', 'c'] ['a', 'b', 'c'] ['', '']"},
    {"think_split_idiom",
     R"~({% set c = '<think>\nplan\n</think>\n\nanswer' %}[{{ c.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') }}][{{ c.split('</think>')[-1].lstrip('\n') }}])~",
     "{}", "[plan][answer]"},
    {"affixes", "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'Hello'.startswith('l', 2) }} {{ 'Hello'.endswith('l', 0, 4) }}",
     "{}", "True True True True"},
    {"case", "{{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'aB'.swapcase() }} {{ 'héllo wörld'.upper() }}",
     "{}", "HELLO hello Hello World Hello Ab HÉLLO WÖRLD"},
    {"title_method_vs_filter", R"~({{ "they're bill's x-ray".title() }} | {{ "they're bill's x-ray"|title }})~", "{}",
     "They'Re Bill'S X-Ray | They're Bill's X-Ray"},
    {"replace_find_count", "{{ 'a-b-c'.replace('-', '+') }} {{ 'a-b-c'.replace('-', '', 1) }} {{ 'ab'.replace('', '.') }} {{ 'abcabc'.find('c') }} {{ 'abc'.find('z') }} {{ 'abcabc'.rfind('b') }} {{ 'aaa'.count('a') }} {{ 'héllo'.find('l') }} {{ 'abc'.index('c') }}",
     "{}", "a+b+c ab-c .a.b. 2 -1 4 3 2 2"},
    {"join_and_format", "{{ ', '.join(['a', 'b']) }} {{ '{} and {}'.format(1, 'x') }} {{ '{name}!'.format(name='Al') }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ '{:>5}|{:<4}|{:^5}|{:.2f}|{:05d}|{:,}'.format('a', 'b', 'c', 3.14159, 42, 1234567) }}",
     "{}", "a, b 1 and x Al! aba     a|b   |  c  |3.14|00042|1,234,567"},
    {"format_fields", "{{ '{0[a]} {0.a} {1!r} {{}}'.format({'a': 1}, 'q') }}", "{}", "1 1 'q' {}"},
    {"padding_and_predicates", "{{ 'ab'.center(6, '*') }} {{ '7'.zfill(3) }} {{ '-7'.zfill(3) }} {{ 'a=b=c'.partition('=') }} {{ 'a=b=c'.rpartition('=') }} {{ 'x'.isdigit() }} {{ '12'.isdigit() }} {{ 'Ab'.isupper() }} {{ 'ab1'.isalnum() }} {{ ' '.isspace() }} {{ 'Ab Cd'.istitle() }}",
     "{}", "**ab** 007 -07 ('a', '=', 'b=c') ('a=b', '=', 'c') False True False True True True"},
    {"prefix_suffix", "{{ 'prefix-x'.removeprefix('prefix-') }} {{ 'x.txt'.removesuffix('.txt') }} {{ 'ab'.ljust(4, '.') }}{{ 'ab'.rjust(4) }}",
     "{}", "x x ab..  ab"},
    {"unicode_indexing", "{{ '日本語'|length }} {{ '日本語'[1] }} {{ '日本語'[-1:] }} {{ 'a😀b'|length }} {{ 'a😀b'[1] }}", "{}",
     "3 本 語 3 😀"},
    {"percent_format", R"~({{ '%s-%d-%.2f-%r' % ('a', 3, 1.5, 'q') }} {{ '%05.1f|%-4s|%x|%5d|%+d' % (3.14159, 'ab', 255, 42, 7) }} {{ '%(n)s is %(v)d' % {'n': 'x', 'v': 2} }} {{ '%s' % 'one' }} {{ '100%%' % () }})~",
     "{}", "a-3-1.50-'q' 003.1|ab  |ff|   42|+7 x is 2 one 100%"},
};

const Case kContainerMethods[] = {
    {"dict_methods", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {{ d.copy() }}",
     R"~({"d": {"a": 1, "b": 2}})~", "1 None 0 ['a', 'b'] [1, 2] [('a', 1), ('b', 2)] {'a': 1, 'b': 2}"},
    {"list_methods", "{{ [1, 2, 3].index(2) }} {{ [1, 1, 2].count(1) }} {{ (1, 2).index(2) }} {{ [3].copy() }}", "{}",
     "1 2 1 [3]"},
    {"items_iteration_idiom", "{% for k, v in args.items() %}<{{ k }}={{ v | tojson if v is not string else v }}>{% endfor %}",
     R"~({"args": {"city": "Paris", "days": 2, "opts": {"x": [1.5, null]}}})~",
     R"~(<city=Paris><days=2><opts={"x": [1.5, null]}>)~"},
};

const Case kFilters[] = {
    {"tojson_default", "{{ d|tojson }}", R"~({"d": {"b": 1, "a": [true, null, 1.5, "é\"\n<&>"], "c": 1e-07}})~",
     R"~({"b": 1, "a": [true, null, 1.5, "é\"\n<&>"], "c": 1e-07})~"},
    {"tojson_indent", "{{ d|tojson(indent=2) }}|{{ [] | tojson(indent=2) }}|{{ [1] | tojson(indent='\t') }}",
     R"~({"d": {"a": [1, {}], "b": {"c": null}}})~",
     "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": {\n    \"c\": null\n  }\n}|[]|[\n\t1\n]"},
    {"tojson_options", "{{ d|tojson(sort_keys=true) }} {{ 'é😀'|tojson(ensure_ascii=true) }} {{ [1, {'a': 2}]|tojson(separators=(',', ':')) }} {{ d|tojson(ensure_ascii=False) }}",
     R"~({"d": {"b": 1, "a": "ü"}})~", R"~({"a": "ü", "b": 1} "\u00e9\ud83d\ude00" [1,{"a":2}] {"b": 1, "a": "ü"})~"},
    {"tojson_scalars", "{{ 'x'|tojson }} {{ 3|tojson }} {{ 2.0|tojson }} {{ none|tojson }} {{ (1, 2)|tojson }} {{ {1: 'a', true: 'b'}|tojson }}",
     "{}", R"~("x" 3 2.0 null [1, 2] {"1": "b"})~"},
    {"trim_length_default", "[{{ '  a  '|trim }}] [{{ 'xxaxx'|trim('x') }}] {{ [1, 2]|length }} {{ 'abc'|count }} {{ {'a': 1}|length }} {{ missing|default('x') }} [{{ ''|default('x') }}] {{ ''|default('x', true) }} {{ none|d('y') }}",
     "{}", "[a] [a] 2 3 1 x [] x None"},
    {"join", "{{ [1, 2, 'a']|join('-') }} {{ users|join(', ', attribute='name') }} {{ 'abc'|join('.') }} {{ [none, true]|join }}",
     kUsers, "1-2-a al, bo, cy a.b.c NoneTrue"},
    {"map", "{{ users|map(attribute='name')|list }} {{ ['a', 'b']|map('upper')|list }} {{ users|map(attribute='admin', default=false)|list }} {{ [[1, 2], [3]]|map('length')|list }} {{ ['a:b']|map('replace', ':', '=')|list }}",
     kUsers, "['al', 'bo', 'cy'] ['A', 'B'] [True, False, False] [2, 1] ['a=b']"},
    {"select_reject", "{{ range(6)|select('odd')|list }} {{ range(6)|reject('odd')|list }} {{ [0, 1, '', 'a']|select|list }} {{ [1, 2, 3]|select('>', 1)|list }} {{ [1, 2, 3]|select('in', [1, 3])|list }} {{ [1, 'a']|select('string')|list }}",
     "{}", "[1, 3, 5] [0, 2, 4] [1, 'a'] [2, 3] [1, 3] ['a']"},
    {"selectattr_rejectattr", "{{ users|selectattr('admin')|map(attribute='name')|list }} {{ users|rejectattr('admin')|map(attribute='name')|join }} {{ users|selectattr('name', 'equalto', 'bo')|list|length }} {{ users|selectattr('age', 'gt', 28)|map(attribute='name')|join }} {{ users|selectattr('admin', 'defined')|list|length }}",
     kUsers, "['al'] bocy 1 alcy 2"},
    {"first_last", "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ 'abc'|first }} {{ 'abc'|last }} [{{ []|first }}] {{ {'a': 1, 'b': 2}|first }}",
     "{}", "1 3 a c [] a"},
    {"conversions", "{{ 'ab'|list }} {{ 3|string }} {{ '42'|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ '2.5'|float }} {{ 4|float }} {{ true|int }} {{ 3.99|int }} {{ ' 12 '|int }} {{ '0x1A'|int(base=16) }} {{ 'inf'|float }} {{ none|int }}",
     "{}", "['a', 'b'] 3 42 3 0 7 2.5 4.0 1 3 12 26 inf 0"},
    {"case_filters", "{{ 'hello WORLD'|capitalize }} {{ 'x-ray (tom) o\\'neil'|title }} {{ 'Ab'|upper }}{{ 'Ab'|lower }} {{ 42|upper }}",
     "{}", "Hello world X-Ray (Tom) O'neil ABab 42"},
    {"replace", "{{ 'aaa'|replace('a', 'b', 2) }} {{ 123|replace(2, 9) }} {{ 'a.b'|replace('.', '') }}", "{}", "bba 193 ab"},
    {"round_abs", "{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 1.234|round(1, 'ceil') }} {{ 1.25|round(1, 'floor') }} {{ 3|round }} {{ 1234.5|round(-2) }} {{ -3|abs }} {{ (-2.5)|abs }}",
     "{}", "2.0 4.0 2.67 1.3 1.2 3 1200.0 3 2.5"},
    {"indent", "[{{ 'a\nb\n\nc'|indent(2) }}] [{{ 'a\nb'|indent(2, first=true) }}] [{{ 'a\n\nb'|indent(2, blank=true) }}] [{{ 'a\nb'|indent('> ') }}]",
     "{}", "[a\n  b\n\n  c] [  a\n  b] [a\n  \n  b] [a\n> b]"},
    {"safe_string_escape", "{{ '<b>'|safe }} {{ '<a href=\"x\">&\\'</a>'|e }} {{ 5|string ~ 'x' }} {{ '<'|escape }}", "{}",
     "<b> &lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt; 5x &lt;"},
    {"unique_items_dictsort", "{{ ['a', 'A', 'b', 'a']|unique|list }} {{ ['a', 'A']|unique(case_sensitive=true)|list }} {{ users|unique(attribute='admin')|map(attribute='name')|list }} {{ {'a': 1}|items|list }} {{ {'b': 1, 'A': 2, 'c': 0}|dictsort }} {{ {'b': 1, 'a': 2}|dictsort(by='value', reverse=true) }}",
     kUsers, "['a', 'b'] ['a', 'A'] ['al', 'bo', 'cy'] [('a', 1)] [('A', 2), ('b', 1), ('c', 0)] [('a', 2), ('b', 1)]"},
    {"batch_slice", "{{ range(5)|batch(2)|list }} {{ range(5)|batch(2, 'x')|list }} {{ range(7)|slice(3)|list }} {{ range(4)|slice(3, 0)|list }}",
     "{}", "[[0, 1], [2, 3], [4]] [[0, 1], [2, 3], [4, 'x']] [[0, 1, 2], [3, 4], [5, 6]] [[0, 1], [2, 0], [3, 0]]"},
    {"sum_min_max", "{{ [1, 2, 3]|sum }} {{ [1.5, 2]|sum }} {{ users|sum(attribute='age') }} {{ [[1], [2]]|sum(start=[]) }} {{ [3, 1, 2]|min }} {{ ['b', 'A', 'c']|max }} {{ ['b', 'A', 'c']|min }} {{ (users|max(attribute='age')).name }} [{{ []|max }}]",
     kUsers, "6 3.5 90 [1, 2] 1 c A cy []"},
    {"sort_reverse", "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ users|sort(attribute='age', reverse=true)|map(attribute='name')|join(',') }} {{ [1, 2]|reverse|list }} {{ 'abc'|reverse }} {{ [[2, 'b'], [1, 'z'], [2, 'a']]|sort }}",
     kUsers, "[1, 2, 3] ['A', 'b', 'c'] ['A', 'b', 'c'] cy,al,bo [2, 1] cba [[1, 'z'], [2, 'a'], [2, 'b']]"},
    {"sort_multiple_attributes", "{{ rows|sort(attribute='g,n')|map(attribute='n')|join }}",
     R"~({"rows": [{"g": 2, "n": "a"}, {"g": 1, "n": "c"}, {"g": 1, "n": "b"}]})~", "bca"},
    {"misc_text", "{{ 'Hello, wide world!'|wordcount }} {{ 'ab'|center(6) }}| {{ '%s=%s'|format('a', 1) }} {{ 'hello world foo'|truncate(9, leeway=0) }} {{ 'hello world'|truncate(5, true, '!', 0) }} {{ 'short'|truncate(10) }}",
     "{}", "3   ab  | a=1 hello... hell! short"},
    {"markup", R"~({{ ('<'|safe) + '<' }} {{ '<' + ('<'|safe) }} {{ ['a'|safe, 'b'|e] }} {{ ('a b'|safe).split() }} {{ ('x'|safe).upper() }} {{ ('<b>'|safe).join(['<', '>']) }} {{ ('<'|e) * 2 }} {{ ('%s'|safe) % '<' }} {{ '<'|e is escaped }} {{ '<' is escaped }} {{ ('<'|safe) ~ '<' }} {{ ('a'|safe)|string is escaped }})~",
     "{}", "<&lt; &lt;< [Markup('a'), Markup('b')] [Markup('a'), Markup('b')] X &lt;<b>&gt; &lt;&lt; &lt; True False << True"},
    {"dict_views", "{{ d.keys() }} {{ d.values() }} {{ d.items() }} [{{ d.keys()[0] }}] {{ 'a' in d.keys() }} {{ d.items()|length }} {{ d.keys() is sequence }} {{ d.keys() is iterable }} {{ d.values()|list }}",
     R"~({"d": {"a": 1, "b": [2]}})~", "dict_keys(['a', 'b']) dict_values([1, [2]]) dict_items([('a', 1), ('b', [2])]) [] True 2 False True [1, [2]]"},
    {"attr", "{{ 'ab'|attr('upper') is callable }} [{{ {'k': 1}|attr('k') }}] {{ {'k': 1}|attr('keys') is defined }}", "{}",
     "True [] True"},
};

const Case kTests[] = {
    {"types", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1 is integer }} {{ 1.0 is float }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is sequence }} {{ 'a' is sequence }} {{ {} is iterable }} {{ 1 is iterable }} {{ true is boolean }} {{ 1 is boolean }}",
     R"~({"x": 1})~", "True False True True True True False True True True True True True True False True False"},
    {"truth_tests", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ none is sameas none }} {{ 1 is not string }}",
     "{}", "True False True False True True"},
    {"number_tests", "{{ 3 is odd }} {{ 4 is even }} {{ 3.0 is odd }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }}", "{}",
     "True True True True False"},
    {"comparison_tests", "{{ 'a' is equalto 'a' }} {{ 1 is eq 1 }} {{ 1 is ne 2 }} {{ 2 is gt 1 }} {{ 2 is lt 1 }} {{ 2 is ge 2 }} {{ 2 is le 1 }} {{ 2 is greaterthan 1 }} {{ 1 is lessthan 2 }} {{ 2 is in [1, 2] }} {{ 'a' is in 'cat' }}",
     "{}", "True True True True False True False True True True True"},
    {"text_tests", "{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'aBc' is lower }} {{ '123' is lower }}", "{}", "True True False False"},
    {"callable_filter_test", "{{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }} {{ range is callable }} {{ 'x'.upper is callable }} {{ 'x' is callable }} {{ 'x' is escaped }}",
     "{}", "True False True True True False False"},
};

TEST(ChatTemplateBuiltinsTest, StringMethods) { RunCases(kStringMethods); }
TEST(ChatTemplateBuiltinsTest, ContainerMethods) { RunCases(kContainerMethods); }
TEST(ChatTemplateBuiltinsTest, Filters) { RunCases(kFilters); }
TEST(ChatTemplateBuiltinsTest, Tests) { RunCases(kTests); }

}  // namespace
}  // namespace krasis::chat_template_test
