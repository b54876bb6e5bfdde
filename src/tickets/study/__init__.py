"""Studies: an experiment file expanded into jobs and run by an executor, then matched and reported."""
