-- wrk script: the classic API's request, POST /seckill/seckill with no body (as JMeter sent it).
wrk.method = "POST"
