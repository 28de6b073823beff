"""Write the study's report for a sweep: python report.py outputs/multirun/<date>_<time> [OUT_DIR]."""

from mnist_study.reporting.report import main

if __name__ == "__main__":
    main()
