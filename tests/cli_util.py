"""Running a command's main() in the test process (shared by the command-line tests)."""


def call_main(main, argv, capsys):
    """(exit code, stdout, stderr) of main(argv). argparse's exit for a bad flag or value is a
    SystemExit, caught here; any other exception escapes and fails the test (it would have
    been a traceback)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
