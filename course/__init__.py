"""The course: assignments and their grader, the student build, and the web site."""
