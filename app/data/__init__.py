"""The dashboard's data: one module per page (home, corpora, vocabulary, train, runs, tasks,
experiments, models), each a set of small functions of a sessionmaker that return plain dicts and
lists, so a page never holds ORM objects across reruns; `common` holds what several pages share
(formatting, the run row, uploads, queueing, the model folders the dashboard may read).

A page in app/views imports its own module here (and `common`, and another page's module for a
list it shows too, such as the corpora); these modules never import a view or app.ui."""
