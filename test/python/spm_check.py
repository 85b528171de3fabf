#!/usr/bin/python3
"""Encode and decode with Debian's python3-sentencepiece, for test/tokenizer.test.ts.

Usage: /usr/bin/python3 test/python/spm_check.py MODEL < requests.json > answers.json

The request is one JSON object: {"encode": [text, ...], "decode": [[id, ...], ...]}.
The answer is {"encode": [[id, ...], ...], "decode": [text, ...], "pieces": N, "version": "..."}:
plain SentencePiece, no BOS/EOS, each text encoded on its own.
"""
import json
import sys

import sentencepiece as spm


def main():
    sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
    request = json.load(sys.stdin)
    answer = {
        "version": spm.__version__,
        "pieces": sp.get_piece_size(),
        "encode": [sp.encode(text) for text in request.get("encode", [])],
        "decode": [sp.decode(ids) for ids in request.get("decode", [])],
    }
    # ensure_ascii keeps lone surrogates (none expected) and odd code points unambiguous.
    json.dump(answer, sys.stdout, ensure_ascii=True)


if __name__ == "__main__":
    main()
