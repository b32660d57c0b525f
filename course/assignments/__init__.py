"""One module per assignment, each defining ``ASSIGNMENT`` (see ``course.framework``)."""
