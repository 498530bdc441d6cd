# Turns one SPIR-V file into a C source: cmake -DIN=x.spv -DOUT=x.c -DSYM=name -P embed_spirv.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" body "${body}")
file(WRITE "${OUT}.tmp"
"/* generated from ${IN}; do not edit */\n#include <stddef.h>\n#include <stdint.h>\n"
"_Alignas(4) const unsigned char ${SYM}[] = {\n${body}\n};\nconst size_t ${SYM}_size = ${bytes};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
