try:  # Ctrl-C while the command's modules load: the same one line as once it runs
    from monitor.cli import main
except KeyboardInterrupt:
    import sys

    print("monitor: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
