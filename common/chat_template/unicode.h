// UTF-8 and Unicode helpers for the chat-template interpreter.
//
// Python strings are sequences of code points; the interpreter keeps them as UTF-8
// std::string and decodes only where Python's semantics count code points (len,
// indexing, slicing, case mapping, whitespace). Character classes follow Python's
// str methods (isspace, isprintable, isalpha ...) using utf8proc's Unicode tables.
#pragma once

#include <string>
#include <string_view>

#include "common/utf8.h"

namespace krasis::chat_template {

// Decodes UTF-8; each invalid byte becomes U+FFFD.
std::u32string DecodeUtf8(std::string_view s);
using krasis::AppendUtf8;  // common/utf8.h
std::string EncodeUtf8(std::u32string_view s);
// Number of code points (what Python's len() returns for the string).
size_t CodePointCount(std::string_view s);
// Byte offset of the code point with index `cp_index` (clamped to s.size()).
size_t ByteOffsetOfCodePoint(std::string_view s, size_t cp_index);
bool IsAscii(std::string_view s);

bool IsPySpace(char32_t c);      // str.isspace(), also Python's regex \s
bool IsPyPrintable(char32_t c);  // str.isprintable(): repr() escapes the others
bool IsPyLineBreak(char32_t c);  // the boundaries str.splitlines() splits at
bool IsCased(char32_t c);        // Lu, Ll, Lt
bool IsLowerCase(char32_t c);
bool IsUpperCase(char32_t c);
bool IsAlpha(char32_t c);        // str.isalpha(): L*
bool IsDecimal(char32_t c);      // Nd
bool IsNumeric(char32_t c);      // Nd, Nl, No
bool IsAlnum(char32_t c);
bool IsWordChar(char32_t c);     // Python's regex \w
char32_t ToUpper(char32_t c);
char32_t ToLower(char32_t c);
char32_t ToTitle(char32_t c);

}  // namespace krasis::chat_template
