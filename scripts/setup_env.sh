#!/usr/bin/env bash
# Creates or refreshes .venv with the pinned dependencies, installs this package (editable) and
# generates the ROS 2 messages with rosidl + CMake. Idempotent: each step is skipped when the
# inputs it depends on (lock file, msg/srv files) have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${UNI_O4_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV ($($PY --version))"
  "$PY" -m venv "$VENV"
fi

stamp() { cat "$@" | sha256sum | cut -c1-16; }

# build_interfaces SOURCE_DIR BUILD_NAME PYTHON_DIR [cmake args]: rosidl + CMake into the venv.
build_interfaces() {
  local src=$1 build=$ROOT/build/$2 pydir=$3
  shift 3
  rm -rf "$build" && mkdir -p "$build"
  (
    export AMENT_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH
    cd "$build"
    cmake "$src" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" -DPYTHON_INSTALL_DIR="$pydir" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF "$@" > cmake.log 2>&1 \
      || { tail -30 cmake.log; exit 1; }
    make -j"$(nproc)" > make.log 2>&1 || { tail -30 make.log; exit 1; }
    make install > install.log 2>&1 || { tail -30 install.log; exit 1; }
  )
}

LOCK_HASH=$(stamp requirements.lock requirements-sdk.txt pyproject.toml)
if [ "$(cat "$VENV/.lock-stamp" 2>/dev/null)" != "$LOCK_HASH" ]; then
  say "installing pinned dependencies (requirements.lock)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 \
    | grep -v -E "^WARNING: Location .* is ignored" || true
  if [ "$(uname -m)" = x86_64 ]; then  # the SDK wheel exists for x86_64 only
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-sdk.txt 2>&1 \
      | grep -v -E "^WARNING: Location .* is ignored" || true
    "$VENV/bin/python" -c "from unitree_legged_sdk import robot_interface" || { say "Unitree SDK install failed"; exit 1; }
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
    | grep -v -E "^WARNING: Location .* is ignored" || true
  "$VENV/bin/python" -c "import torch, mujoco, rclpy, h5py" || { say "dependency install failed"; exit 1; }
  echo "$LOCK_HASH" > "$VENV/.lock-stamp"
fi

MSG_HASH=$(stamp CMakeLists.txt package.xml cmake/*.cmake msg/*.msg srv/*.srv)
if [ "$(cat "$VENV/.msg-stamp" 2>/dev/null)" != "$MSG_HASH" ]; then
  say "generating ROS 2 interfaces (msg/, srv/) with rosidl"
  # Libraries go to $VENV/lib, which the ROS wheels already put on the library path; Python
  # modules to $VENV/ros/python, which uni_o4_ros/__init__.py adds to the package's path.
  build_interfaces "$ROOT" msgs ros/python -DUNI_O4_MSGS_ONLY=ON
  "$VENV/bin/python" -c "from uni_o4_ros.msg import JointCommand, PolicyUpdate; from uni_o4_ros.srv import StartEpisode" \
    || { say "generated messages do not import"; exit 1; }
  echo "$MSG_HASH" > "$VENV/.msg-stamp"
fi
# tf2_msgs has no wheel: build its one message (TFMessage) the same way, into its own folder that a
# .pth file puts on sys.path (the nodes publish /tf and /tf_static with it).
TF2_HASH=$(stamp third_party/tf2_msgs/CMakeLists.txt third_party/tf2_msgs/package.xml \
  third_party/tf2_msgs/msg/*.msg cmake/*.cmake)
if [ "$(cat "$VENV/.tf2-stamp" 2>/dev/null)" != "$TF2_HASH" ]; then
  say "generating tf2_msgs/TFMessage with rosidl (no wheel exists)"
  build_interfaces "$ROOT/third_party/tf2_msgs" tf2_msgs ros/tf2
  SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$VENV/ros/tf2" > "$SITE/uni_o4_ros_tf2_msgs.pth"
  "$VENV/bin/python" -c "from tf2_msgs.msg import TFMessage" || { say "generated tf2_msgs does not import"; exit 1; }
  echo "$TF2_HASH" > "$VENV/.tf2-stamp"
fi
say "ready: $VENV"
