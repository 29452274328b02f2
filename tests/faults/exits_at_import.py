"""A task module that calls sys.exit at import, as a script written for the command line would."""

import sys

sys.exit("this module is a script")
