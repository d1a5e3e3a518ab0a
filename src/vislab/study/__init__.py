"""A study: the set of runs that answers a chosen set of the practical's questions.

``profiles/*.yaml`` say which runs exist (a *role* name -> a vislab command and its options) and at
which sizes (quick: offline on a laptop; full: the course's settings). ``questions/`` hold one small
function per question id that turns the metrics of the roles it names into an answer. ``plan``
picks the runs the chosen questions need (each run once, named by a hash of its resolved config),
``runner`` runs them (reusing finished ones), and ``reporting.study_report`` writes the report.
"""
