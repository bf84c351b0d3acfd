"""The report stage: tables, figures and the results page, and comparing two results folders."""
