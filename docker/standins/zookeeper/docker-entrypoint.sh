#!/bin/sh
# The official zookeeper image's configuration contract, for the Debian stand-in:
# ZOO_MY_ID -> $ZOO_DATA_DIR/myid; ZOO_SERVERS ("server.1=zk1:2888:3888;2181 server.2=...")
# plus ZOO_TICK_TIME, ZOO_INIT_LIMIT, ZOO_SYNC_LIMIT, ZOO_MAX_CLIENT_CNXNS,
# ZOO_STANDALONE_ENABLED, ZOO_ADMINSERVER_ENABLED, ZOO_4LW_COMMANDS_WHITELIST and
# ZOO_CFG_EXTRA become $ZOO_CONF_DIR/zoo.cfg unless that file is mounted. `zkServer.sh
# start-foreground` (the official CMD) runs the server in the foreground; any other command
# runs as given.
set -eu
CONFIG="$ZOO_CONF_DIR/zoo.cfg"
mkdir -p "$ZOO_CONF_DIR" "$ZOO_DATA_DIR" "$ZOO_DATA_LOG_DIR"

if [ ! -f "$CONFIG" ]; then
    {
        echo "dataDir=$ZOO_DATA_DIR"
        echo "dataLogDir=$ZOO_DATA_LOG_DIR"
        echo "tickTime=${ZOO_TICK_TIME:-2000}"
        echo "initLimit=${ZOO_INIT_LIMIT:-5}"
        echo "syncLimit=${ZOO_SYNC_LIMIT:-2}"
        echo "autopurge.snapRetainCount=${ZOO_AUTOPURGE_SNAPRETAINCOUNT:-3}"
        echo "autopurge.purgeInterval=${ZOO_AUTOPURGE_PURGEINTERVAL:-0}"
        echo "maxClientCnxns=${ZOO_MAX_CLIENT_CNXNS:-60}"
        echo "standaloneEnabled=${ZOO_STANDALONE_ENABLED:-true}"
        echo "admin.enableServer=${ZOO_ADMINSERVER_ENABLED:-true}"
        echo "4lw.commands.whitelist=${ZOO_4LW_COMMANDS_WHITELIST:-srvr}"
        if [ -z "${ZOO_SERVERS:-}" ]; then
            echo "clientPort=2181"
        else
            for server in $ZOO_SERVERS; do echo "$server"; done
        fi
        for entry in ${ZOO_CFG_EXTRA:-}; do echo "$entry"; done
    } >"$CONFIG"
fi
if [ ! -f "$ZOO_DATA_DIR/myid" ]; then
    echo "${ZOO_MY_ID:-1}" >"$ZOO_DATA_DIR/myid"
fi

if [ "$*" = "zkServer.sh start-foreground" ]; then
    CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
    LOG4J="$ZOO_CONF_DIR/log4j.properties"
    if [ ! -f "$LOG4J" ]; then
        printf '%s\n' 'log4j.rootLogger=INFO, CONSOLE' \
            'log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender' \
            'log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout' \
            'log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n' \
            >"$LOG4J" 2>/dev/null || LOG4J=""
    fi
    # exec: the JVM is PID 1 and gets `docker stop`'s SIGTERM itself.
    exec java ${JVMFLAGS:-} ${LOG4J:+-Dlog4j.configuration=file:$LOG4J} \
        -cp "$CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$CONFIG"
fi
exec "$@"
