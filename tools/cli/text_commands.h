// `krasis-cli tokenize | detokenize | render`: a model directory's own tokenizer
// and chat template from the command line, exactly as the gateway applies them.
#pragma once

namespace krasis {

int TokenizeCommand(int argc, char** argv);
int DetokenizeCommand(int argc, char** argv);
int RenderCommand(int argc, char** argv);

}  // namespace krasis
