// The storage formats a weight can be switched to for decode (--experts,
// --attention, --lm-head, ...): as stored in the checkpoint, or group-quantized
// INT8 / INT4 (common/quant). Defined in model.cc.
#pragma once

#include <optional>
#include <string_view>

#include "common/quant/quant_format.h"

namespace krasis {

// kBf16 keeps the checkpoint's weights (the exact reference path); kInt8 / kInt4
// quantize them (group-wise) and run them with the quantized kernels.
enum class ExpertFormat { kBf16, kInt8, kInt4 };
std::string_view ExpertFormatName(ExpertFormat format);
std::optional<ExpertFormat> ParseExpertFormat(std::string_view name);
// INT8 or INT4 (for a quantized format).
quant::QuantFormat ToQuantFormat(ExpertFormat format);

}  // namespace krasis
