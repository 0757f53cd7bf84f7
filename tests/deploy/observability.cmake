# Containers, Prometheus and Grafana (deploy/; docs/observability.md). All
# labelled deploy; exit 77 = skipped (a tool such as promtool is not
# installed, or the binaries or the model are missing).
#   obs_promtool_check_config   promtool check config deploy/prometheus/prometheus.yml
#   obs_promtool_check_rules    promtool check rules deploy/prometheus/rules/*.yml
#   obs_promtool_test_rules     promtool test rules deploy/prometheus/tests/*.yml
#   obs_dashboards              dashboards in sync with deploy/grafana/dashboards.py and the docs,
#                               well-formed, every query parses, every metric exists, rules documented
#   obs_compose                 deploy/compose.yaml's services, profiles, discovery, flags, mounts
#   obs_dockerfiles             deploy/*.Dockerfile: sources, build-tree paths, configure, packages, CMD
#   obs_dashboard_queries       real services + real Prometheus with the project's rules: every
#                               dashboard query returns data after a short load
# The Python ones run through scripts/run-python-test (PyYAML from
# tests/python-requirements.txt, which scripts/install-deps installs).
set(POLAR_RUN_PYTHON ${PROJECT_SOURCE_DIR}/scripts/run-python-test)
set(POLAR_OBS_ENV
    "POLAR_BIN_DIR=${CMAKE_BINARY_DIR}/bin;POLAR_BUILD_DIR=${CMAKE_BINARY_DIR};POLAR_DEFAULT_MODEL=${POLAR_DEFAULT_MODEL};POLAR_STUBS_DIR=${CMAKE_BINARY_DIR}/python;POLAR_TEST_DATA_DIR=${POLAR_TEST_DATA_DIR};OMP_WAIT_POLICY=passive")

foreach(mode check-config check-rules test-rules)
  string(REPLACE "-" "_" name ${mode})
  add_test(NAME obs_promtool_${name} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/obs_promtool_test.sh ${mode})
  set_tests_properties(obs_promtool_${name} PROPERTIES LABELS deploy SKIP_RETURN_CODE 77 TIMEOUT 60)
endforeach()

add_test(NAME obs_dashboards
         COMMAND ${POLAR_RUN_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/obs_dashboards_test.py)
set_tests_properties(obs_dashboards PROPERTIES
  LABELS "deploy;python" SKIP_RETURN_CODE 77 TIMEOUT 300 ENVIRONMENT "${POLAR_OBS_ENV}")

if(TARGET polar-worker AND TARGET polar-gateway AND TARGET polar)
  add_test(NAME obs_compose
           COMMAND ${POLAR_RUN_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/obs_compose_test.py)
  add_test(NAME obs_dockerfiles
           COMMAND ${POLAR_RUN_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/obs_dockerfiles_test.py)
  add_test(NAME obs_dashboard_queries
           COMMAND ${POLAR_RUN_PYTHON}
                   ${PROJECT_SOURCE_DIR}/tests/integration/dashboard_queries_test.py)
  set_tests_properties(obs_compose obs_dockerfiles PROPERTIES
    LABELS "deploy;python" SKIP_RETURN_CODE 77 TIMEOUT 300 ENVIRONMENT "${POLAR_OBS_ENV}")
  set_tests_properties(obs_dashboard_queries PROPERTIES
    LABELS "deploy;model;python" SKIP_RETURN_CODE 77 TIMEOUT 300 ENVIRONMENT "${POLAR_OBS_ENV}")
endif()
