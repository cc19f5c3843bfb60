"""python -m bench SUBCOMMAND ... (from the repository root)."""

import argparse

from bench import distributed, encoder, kernels, lm, peers, rtf, server, stream, sweep, train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="asr-engine benchmarks")
    sub = p.add_subparsers(dest="bench", required=True)
    rtf.add_parser(sub)
    stream.add_parser(sub)
    server.add_parser(sub)
    sweep.add_parser(sub)
    kernels.add_parser(sub)
    peers.add_parser(sub)
    lm.add_parser(sub)
    train.add_parser(sub)
    encoder.add_parser(sub)
    distributed.add_parser(sub)
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:  # what the package refuses (a device, a model, a backend) is one line, as in the CLI
        raise SystemExit(f"python -m bench {args.bench}: error: {e}") from None


if __name__ == "__main__":
    main()
